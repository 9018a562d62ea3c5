"""The throughput benchmark runs end to end in a tiny smoke mode (counts only, nothing timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench_throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_measures_all_three_pipelines(data_root, store, tmp_path):
    bench = load_bench()
    out = tmp_path / "bench.json"
    report = bench.main([
        "--data-root", str(data_root), "--val-size", "40", "--batch-size", "32",
        "--steps", "3", "--repeats", "2", "--warmup", "0", "--models", "mlp", "lenet5",
        "--clock", "cpu", "--tracking-uri", store["tracking_uri"],
        "--override", "trainer.enable_progress_bar=false", "--json", str(out),
    ])
    assert out.exists()
    for model in ("mlp", "lenet5"):
        for pipeline in bench.PIPELINES:
            values = report["samples"][model][pipeline]
            assert len(values) == 2 and all(v > 0 for v in values), (model, pipeline)
