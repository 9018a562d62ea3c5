"""Eight real processes create one new SQLite store and write it at once: nothing is lost.

Each process (tests/store_writer.py) writes as a training job does, through digitlab's own
tracking functions. Whole training jobs writing one store concurrently are covered by the
sweeps of tests/test_load.py (four jobs at once, from two sweeps); here the processes skip the
training so that all eight reach the new store within the same moment.
"""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

import warm
from store_writer import EPOCHS, METRICS, SIZES

JOBS = 8


@pytest.mark.slow
def test_eight_jobs_share_one_new_sqlite_store(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"  # not created yet: the jobs also race to create it
    uri, artifacts = f"sqlite:///{db}", str(tmp_path / "mlruns" / "artifacts")
    go = tmp_path / "go"
    (tmp_path / "images.bin").write_bytes(bytes(range(256)))  # every job's data set
    processes = []
    for seed in range(JOBS):  # each its own process, forked warm (tests/warm.py)
        folder = tmp_path / f"job{seed}"
        folder.mkdir()
        processes.append(
            warm.start("store_writer", str(seed), uri, artifacts, str(folder), str(go))
        )
    try:
        for seed, process in enumerate(processes):  # every job has imported everything it needs
            while not (tmp_path / f"job{seed}" / "ready").exists():
                assert process.poll() is None, process.communicate()
                time.sleep(0.01)
        assert not db.exists()
        go.touch()
        for process in processes:
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, out + err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    digests = {  # all eight runs name the same data sets (each created once, by whichever job won)
        frozenset((i.dataset.name, i.dataset.digest) for i in r.inputs.dataset_inputs) for r in runs
    }
    assert len(digests) == 1 and len(next(iter(digests))) == len(SIZES), digests
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(JOBS)]
    for run in runs:
        seed = int(run.data.params["seed"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test/acc"] == seed / 10
        for name in METRICS:
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted((m.step, m.value) for m in history) == [
                (epoch, seed + epoch / 10) for epoch in range(EPOCHS)
            ], (run.info.run_name, name)
        run_id = run.info.run_id
        assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "checkpoints"}
        (checkpoint,) = client.list_artifacts(run_id, "checkpoints")
        assert checkpoint.path == "checkpoints/best.ckpt"
        local = client.download_artifacts(run_id, checkpoint.path, str(tmp_path / f"got{seed}"))
        assert open(local, "rb").read() == bytes([seed]) * 1000
