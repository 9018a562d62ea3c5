"""Random mutations of a checkpoint, a stored config.yaml and an MLmodel through every loader:
each ends in a result or one DigitlabError line; never a traceback, a file outside the job's
folder, or more than 1 GB of RSS beyond what the loaders' imports hold (fuzz_loaders.py runs
them in a process of their own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
GIGABYTE = 1024**3


def fuzz(tmp_path: Path, cases: int, seed: int) -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "fuzz_loaders.py"), str(tmp_path), str(cases), str(seed)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check(report: dict, tmp_path: Path, cases: int) -> None:
    assert report["failures"] == []
    assert sum(report["ended"].values()) == cases
    assert report["ended"].get("refused", 0) > cases // 2  # the mutations do reach the checks
    assert report["peak_rss"] - report["warm_rss"] < GIGABYTE, report  # what the cases took
    assert list((tmp_path / "marker").iterdir()) == []


def test_a_few_hundred_mutated_inputs_end_in_a_result_or_one_line(tmp_path):
    check(fuzz(tmp_path, 240, seed=1), tmp_path, 240)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 100-175 s each in the full suite on 2 cores (2026-12-07)
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_thousands_of_mutated_inputs_end_in_a_result_or_one_line(tmp_path, seed):
    check(fuzz(tmp_path, 1000, seed=seed), tmp_path, 1000)
