"""The throughput benchmark in a tiny smoke mode: its JSON holds every measurement of the run, each
rate is the samples trained over the time its clock measured, and digitlab's rate is the one its
own MLflow run logged."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench_throughput.py"
MODELS = ("mlp", "lenet5")  # lenet5: torchvision's pipeline resizes to 32x32
STEPS, BATCH, REPEATS = 6, 32, 2


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recording_clock(bench, monkeypatch) -> list[float]:
    """Replace the benchmark's CPU clock by the same clock that keeps every reading it gives."""
    readings: list[float] = []

    def clock() -> float:
        readings.append(time.thread_time())
        return readings[-1]

    monkeypatch.setitem(bench.CLOCKS, "cpu", clock)
    return readings


def argv(data_root: Path, tracking_uri: str, *extra: str) -> list[str]:
    return [
        "--data-root",
        str(data_root),
        "--val-size",
        "40",
        "--batch-size",
        str(BATCH),
        "--warmup",
        "0",
        "--clock",
        "cpu",
        "--tracking-uri",
        tracking_uri,
        "--override",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.mark.slow
def test_benchmark_json_holds_every_measurement_of_the_run(data_root, store, tmp_path, monkeypatch):
    bench = load_bench()
    readings = recording_clock(bench, monkeypatch)
    out = tmp_path / "bench.json"
    args = argv(
        data_root,
        store["tracking_uri"],
        "--steps",
        str(STEPS),
        "--repeats",
        str(REPEATS),
        "--models",
        *MODELS,
        "--override",
        "data.steps_per_call=3",
        "--json",
        str(out),
    )
    report = bench.main(args)

    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["argv"] == args
    assert set(saved) == {"argv", "date", "machine", "samples", "trained", "medians"}
    # Every pipeline of every round trained the same STEPS batches; its clock was read twice
    # around them (plain, digitlab, torchvision in turn), and the rate is one over the other.
    assert len(readings) == 2 * len(bench.PIPELINES) * len(MODELS) * REPEATS
    windows = iter([end - start for start, end in zip(readings[::2], readings[1::2], strict=True)])
    for round_ in range(REPEATS):
        for model in MODELS:
            for pipeline in bench.PIPELINES:
                assert saved["trained"][model][pipeline][round_] == STEPS * BATCH, (model, pipeline)
                rate = saved["samples"][model][pipeline][round_]
                assert math.isfinite(rate) and rate > 0
                expected = STEPS * BATCH / next(windows)
                # rel 1e-6: digitlab's rate is the float32 its run logged
                assert rate == pytest.approx(expected, rel=1e-6), (model, pipeline)
    for model in MODELS:
        for pipeline in bench.PIPELINES:
            values = saved["samples"][model][pipeline]
            assert saved["medians"][model][pipeline] == pytest.approx(statistics.median(values))
    # digitlab's numbers are its runs' own train/samples_per_sec, one run per model and round.
    client = MlflowClient(store["tracking_uri"])
    experiment = client.get_experiment_by_name("digitlab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED"] * (len(MODELS) * REPEATS)
    logged = [r.data.metrics["train/samples_per_sec"] for r in runs]
    measured = [saved["samples"][m]["digitlab"][r] for r in range(REPEATS) for m in MODELS]
    assert logged == pytest.approx(measured, rel=1e-12)


def test_benchmark_refuses_pipelines_that_trained_different_amounts(data_root, store):
    """3 steps of 32 in the plain loops, but digitlab with data.steps_per_call=20 trains whole
    Lightning steps of 20 optimizer steps (the tiny split's 200 rows): rates of different work
    would not compare."""
    bench = load_bench()
    with pytest.raises(
        SystemExit,
        match=r"mlp: the pipelines trained different numbers of "
        r"samples \{'plain': 96, 'digitlab': 200, 'torchvision': 96\}",
    ):
        bench.main(
            argv(
                data_root,
                store["tracking_uri"],
                "--steps",
                "3",
                "--repeats",
                "1",
                "--models",
                "mlp",
                "--override",
                "data.steps_per_call=20",
            )
        )


def test_each_steps_per_call_value_is_its_own_pipeline_with_its_own_ratio(data_root, store):
    """--steps-per-call 1 2: digitlab runs once per value in every round, beside the plain loop,
    each on the same work; --no-torchvision leaves (c) out."""
    bench = load_bench()
    report = bench.main(
        argv(
            data_root,
            store["tracking_uri"],
            "--steps",
            "2",
            "--repeats",
            "1",
            "--models",
            "mlp",
            "--steps-per-call",
            "1",
            "2",
            "--no-torchvision",
        )
    )
    assert set(report["trained"]["mlp"]) == {"plain", "digitlab@1", "digitlab@2"}
    assert all(counts == [2 * BATCH] for counts in report["trained"]["mlp"].values())
    client = MlflowClient(store["tracking_uri"])
    experiment = client.get_experiment_by_name("digitlab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert sorted(r.data.params["data.steps_per_call"] for r in runs) == ["1", "2"]
