"""experiments/gpu_check.py, the GPU measurements of one table: its table and medians, and its CPU
mode (GPU_CHECK_CPU=1) end to end on the tiny data set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import gpu_check  # noqa: E402


def test_the_table_has_a_column_per_measure_and_blank_cells_for_what_a_row_lacks():
    rows = [
        {"measurement": "recipe, seed 1", "test/acc %": 99.123, "training s": 0.4321},
        {"measurement": "bench", "img/s": 123456.7, "b/a": 0.967},
    ]
    lines = gpu_check.table(rows).splitlines()
    assert lines[0] == "| " + " | ".join(gpu_check.COLUMNS) + " |"
    assert lines[2] == "| recipe, seed 1 | 99.12 | 0.43 |  |  |  |  |  |  |"
    assert lines[3] == "| bench |  |  | 123,457 |  |  |  |  | 0.97 |"


def test_medians_over_seeds_and_the_lowest_accuracy():
    seeds = [{"measurement": str(s), "test/acc %": a, "training s": t} for s, a, t in
             [(1, 99.2, 0.4), (2, 98.9, 0.6), (3, 99.1, 0.5)]]  # fmt: skip
    median, lowest = gpu_check.medians(seeds, "median")
    assert median["test/acc %"] == 99.1 and median["training s"] == 0.5
    assert median["capture s"] is None  # no run had it: blank, not zero
    assert lowest["test/acc %"] == 98.9


@pytest.mark.slow
def test_the_cpu_mode_measures_the_recipe_and_both_benchmarks(data_root, capsys):
    text = gpu_check.main(
        ["--cpu", "--root", str(data_root), "--seeds", "1", "--parts", "recipe", "bench"]
    )
    lines = text.splitlines()
    assert lines[0].startswith("gpu_check ") and "CPU (GPU_CHECK_CPU=1" in lines[0]
    names = [line.split(" | ")[0].removeprefix("| ") for line in lines[4:]]
    assert names[:3] == [
        "recipe, seed 1",
        "recipe, median of 1 seeds",
        "lowest test/acc of 1 seeds",
    ]
    assert names[3].startswith("bench batch 8, plain SGD: plain ")  # batch 256 on a GPU
    assert names[4].startswith("bench batch 8, recipe's tricks: plain ")
    recipe = lines[4].split(" | ")
    # test/acc, training seconds, img/s, first step and the whole command were all measured
    assert all(cell.strip() for cell in recipe[1:6]), lines[4]
    assert float(recipe[2]) < float(recipe[5])  # training is a part of the command
    assert float(lines[8].split(" | ")[-1].rstrip(" |")) > 0  # b/a with the tricks
