"""Load: two `digitlab -m` sweeps started at once, two parallel jobs each, on one SQLite store:
every run arrives whole. experiments/load.py runs the same checks at 4 x 4, and through a
tracking server; its LOAD.md holds the figures."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import warm

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SWEEPS, JOBS = 2, 2  # four writers at once, from two sweeps; test_concurrency.py has eight


class ForkedSweep:
    """A sweep started as experiments/load.py starts one, but forked warm (tests/warm.py: no new
    interpreter importing torch, Lightning and MLflow; its jobs still are). Its output goes to
    ``log`` once it has exited."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        assert command[:3] == [sys.executable, "-m", "digitlab"], command
        self._process = warm.start(
            "digitlab", *command[3:], env=env, cwd=EXPERIMENTS.parent, new_session=True
        )  # its own process group, as load.py's
        self.pid, self._log, self.returncode = self._process.pid, log, None

    def poll(self) -> int | None:
        if self.returncode is None and self._process.poll() is not None:
            out, err = self._process.communicate()
            self._log.write_text(out + err)
            self.returncode = self._process.returncode
        return self.returncode

    def wait(self) -> int:
        self._process.wait()
        return self.poll()


@pytest.fixture
def load(monkeypatch):
    """experiments/load.py as a module (it imports load_checks.py from beside it)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("load")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_sweeps_of_parallel_jobs_keep_every_run_whole_in_one_sqlite_store(
    load, data_root, store, tmp_path
):
    # store: tmp_path/mlruns/mlflow.db, already migrated; the sweeps put their artifacts beside it
    result = load.run_sweeps(
        store["tracking_uri"], data_root, tmp_path, SWEEPS, JOBS, timeout_s=840, start=ForkedSweep
    )
    output = "\n".join(log.read_text() for log in result["logs"])
    assert result["exit_codes"] == [0] * SWEEPS, output[-6000:]
    assert output.count(f"Joblib.Parallel(n_jobs={JOBS}") == SWEEPS  # each sweep's jobs at once

    checked = load.check_store(store["tracking_uri"], SWEEPS, JOBS)
    assert checked.failures == [], "\n".join(checked.failures)
    assert checked.runs == SWEEPS * (JOBS + 1)
    assert checked.at_once >= JOBS, "the jobs never overlapped: no concurrency was tested"
    assert load.count_trouble(*result["logs"]) == dict.fromkeys(load.TROUBLE, 0), output[-6000:]
