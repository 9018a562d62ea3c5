"""One job of test_concurrency.py: ``python -m store_writer SEED URI ARTIFACTS FOLDER GO``.

It has imported everything it needs when it writes FOLDER/ready; it then waits for the file GO
(so that all jobs start together) and writes the store the way digitlab.training.run.train
does: the client (the first contact migrates a new store, under digitlab's file lock), the
experiment, a run, params, its data sets (the same for every job: FOLDER/../images.bin cut one
way), metrics per epoch, the config, a checkpoint file, the run's end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow.tracking  # noqa: F401  (imported before the start: the race is on the store)
from mlflow.entities import Metric

from digitlab.tracking import store as tracking
from digitlab.tracking.lineage import log_splits
from digitlab.tracking.run import log_params

EPOCHS = 5
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
SIZES = {"train": 50, "val": 5, "test": 10}


def main(seed: int, uri: str, artifacts: str, folder: Path, go: Path) -> None:
    (folder / "ready").touch()
    while not go.exists():
        time.sleep(0.001)
    client = tracking.open_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, "digitlab", artifacts)
    run_id = client.create_run(experiment_id, run_name=f"job{seed}").info.run_id
    log_params(client, run_id, {"seed": str(seed), "model._target_": "digitlab.models.MLP"})
    log_splits(client, run_id, "mnist", [folder.parent / "images.bin"], SIZES, {"seed": 0})
    client.log_text(run_id, f"seed: {seed}\n", "config.yaml")
    for epoch in range(EPOCHS):
        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(name, seed + epoch / 10, now, epoch) for name in METRICS]
        )
    checkpoint = folder / "best.ckpt"
    checkpoint.write_bytes(bytes([seed]) * 1000)
    client.log_artifact(run_id, str(checkpoint), "checkpoints")
    client.log_metric(run_id, "test/acc", seed / 10)
    client.set_terminated(run_id, "FINISHED")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
