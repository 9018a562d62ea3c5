"""Eight real processes create one new SQLite store and write it at once: nothing is lost.

Each process writes as a training job does, through digitlab's own tracking functions: it makes
the client (the first contact migrates the new store, under digitlab's file lock), finds or
creates the experiment, creates a run, logs params, metrics per step, the config and a checkpoint
file, and ends the run. Whole training jobs writing one store concurrently are covered by the
parallel sweep in tests/test_sweep.py (eight jobs, four at once); here the processes skip torch
and Lightning (seconds to import each) so that all eight reach the new store within the same
moment.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

JOBS = 8
EPOCHS = 5
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")

# One job: import first, say "ready", wait for the go line on stdin (all jobs start together),
# then write the store the way digitlab.training.run.train does.
JOB = f"""
import sys, time
from pathlib import Path

import mlflow.tracking  # noqa: F401  (imported before the start line: the race is on the store)
from mlflow.entities import Metric

from digitlab.tracking import store as tracking
from digitlab.tracking.run import log_params

seed, uri, artifacts, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()

client = tracking.open_client(uri)
experiment_id = tracking.get_or_create_experiment(client, "digitlab", artifacts)
run_id = client.create_run(experiment_id, run_name=f"job{{seed}}").info.run_id
log_params(client, run_id, {{"seed": str(seed), "model._target_": "digitlab.models.MLP"}})
client.log_text(run_id, f"seed: {{seed}}\\n", "config.yaml")
for epoch in range({EPOCHS}):
    now = int(time.time() * 1000)
    metrics = [Metric(name, seed + epoch / 10, now, epoch) for name in {METRICS!r}]
    client.log_batch(run_id, metrics=metrics)
checkpoint = folder / "best.ckpt"
checkpoint.write_bytes(bytes([seed]) * 1000)
client.log_artifact(run_id, str(checkpoint), "checkpoints")
client.log_metric(run_id, "test/acc", seed / 10)
client.set_terminated(run_id, "FINISHED")
"""


@pytest.mark.slow
def test_eight_jobs_share_one_new_sqlite_store(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"  # not created yet: the jobs also race to create it
    uri, artifacts = f"sqlite:///{db}", str(tmp_path / "mlruns" / "artifacts")
    processes = []
    for seed in range(JOBS):
        folder = tmp_path / f"job{seed}"
        folder.mkdir()
        processes.append(subprocess.Popen(
            [sys.executable, "-c", JOB, str(seed), uri, artifacts, str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    try:
        for process in processes:  # every job has imported everything it needs
            assert process.stdout.readline() == "ready\n", process.communicate()
        assert not db.exists()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
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
