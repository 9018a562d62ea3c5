"""Eight real processes write one new SQLite store at once; every run keeps all it logged."""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

JOBS = 8


def test_eight_jobs_share_one_new_sqlite_store(data_root, tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"  # not created yet: the first jobs also race to create it
    env = {**os.environ, "DIGITLAB_DATA": str(data_root)}
    processes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "digitlab", "model=mlp", f"seed={seed}",
                "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                "trainer.enable_progress_bar=false", "data.val_size=40",
                f"logger.tracking_uri=sqlite:///{db}",
                f"logger.artifact_location={tmp_path / 'mlruns' / 'artifacts'}",
                f"hydra.run.dir={tmp_path / f'job{seed}'}",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for seed in range(JOBS)
    ]
    for process in processes:
        out, err = process.communicate(timeout=1800)
        assert process.returncode == 0, out + err

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(JOBS)]
    for run in runs:
        assert run.info.status == "FINISHED"
        for name in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
            assert name in run.data.metrics, (run.info.run_name, name)
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "checkpoints"}
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
            "checkpoints/best.ckpt"
        ]
