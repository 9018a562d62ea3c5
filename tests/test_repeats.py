"""Seed statistics: a sweep over seed summarises every other configuration across seeds."""

from __future__ import annotations

import statistics

import pytest
from matplotlib.container import ErrorbarContainer

from digitlab.figures.plots.sweep import plot_repeat_summary
from digitlab.tracking.repeats import REPEAT_METRICS, repeat_table
from test_search import last_sweep
from test_sweep import sweep


def rows_for(lrs=("0.1", "0.3"), seeds=("1", "2", "3")) -> list[dict]:
    rows = []
    for i, lr in enumerate(lrs):
        for j, seed in enumerate(seeds):
            rows.append(
                {
                    "status": "FINISHED",
                    "optimizer.lr": lr,
                    "seed": seed,
                    "test/acc": 0.9 + 0.01 * i + 0.003 * j,
                    "val/acc": 0.8 + 0.002 * j,
                }
            )
    return rows


def test_each_configuration_gets_mean_std_min_max_over_seeds():
    rows = rows_for()
    rows.append(
        {"status": "FAILED", "optimizer.lr": "0.1", "seed": "4", "test/acc": 0.1, "val/acc": 0.1}
    )  # a failed run is no sample
    table = repeat_table(rows, ["optimizer.lr", "seed"], ["seed"])
    assert [e["optimizer.lr"] for e in table] == ["0.1", "0.3"]
    for entry in table:
        accs = [
            r["test/acc"]
            for r in rows
            if r["optimizer.lr"] == entry["optimizer.lr"] and r["status"] == "FINISHED"
        ]
        assert entry["runs"] == 3 and entry["seed"] == "1 2 3"
        assert entry["test/acc mean"] == pytest.approx(statistics.fmean(accs))
        assert entry["test/acc std"] == pytest.approx(statistics.stdev(accs))
        assert (entry["test/acc min"], entry["test/acc max"]) == (min(accs), max(accs))


def test_no_summary_without_a_varied_repeat_key():
    assert repeat_table(rows_for(seeds=("1",)), ["optimizer.lr"], ["seed"]) == []


def test_any_key_can_be_the_repeat_dimension():
    table = repeat_table(rows_for(), ["optimizer.lr", "seed"], ["optimizer.lr"])
    assert len(table) == 3 and all(e["runs"] == 2 for e in table)  # grouped by seed instead


def test_the_summary_picture_has_error_bars():
    table = repeat_table(rows_for(), ["optimizer.lr", "seed"], ["seed"])
    figure = plot_repeat_summary(table, ["lr=0.1", "lr=0.3"], REPEAT_METRICS)
    axes = figure.axes
    assert len(axes) == len(REPEAT_METRICS)
    for ax in axes:
        (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert bars.has_yerr and len(bars.lines[0].get_xdata()) == 2


@pytest.mark.slow
def test_a_three_seed_sweep_summarises_in_the_parent(tmp_path, data_root, store):
    sweep(tmp_path, data_root, store, "model=mlp", "seed=1,2,3")
    client, parent, children = last_sweep(store)
    assert len(children) == 3
    for metric in REPEAT_METRICS:
        values = [c.data.metrics[metric] for c in children]
        assert parent.data.metrics[f"repeats/{metric}_mean"] == pytest.approx(
            statistics.fmean(values)
        )
        assert parent.data.metrics[f"repeats/{metric}_std"] == pytest.approx(
            statistics.stdev(values)
        )
        assert parent.data.metrics[f"repeats/{metric}_min"] == pytest.approx(min(values))
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/repeats.csv", "summary/repeats.md", "summary/repeats.png"} <= logged
    folder = client.download_artifacts(parent.info.run_id, "summary")
    assert "test/acc mean" in open(f"{folder}/repeats.csv").readline()
