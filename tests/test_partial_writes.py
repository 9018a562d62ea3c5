"""A checkpoint write cut short by SIGKILL leaves ``.<name>.tmp-<pid>`` (hundreds of MB): the next
write into that folder, or the next command that reaps the dead run, deletes it."""

from __future__ import annotations

import socket
import subprocess

import torch
from mlflow.tracking import MlflowClient

from digitlab.tracking.owners import HOST_TAG, PID_TAG, reap_dead_owners
from digitlab.tracking.tags import CHECKPOINT_DIR_TAG
from digitlab.training.checkpoint_io import AtomicCheckpointIO


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_next_write_deletes_partial_writes_of_dead_processes_only(tmp_path):
    alive = subprocess.Popen(["sleep", "60"])
    try:
        dead = tmp_path / f".last.ckpt.tmp-{dead_pid()}"
        living = tmp_path / f".last.ckpt.tmp-{alive.pid}"
        other = tmp_path / f".best.ckpt.tmp-{dead_pid()}"  # another file's: its own write's turn
        for partial in (dead, living, other):
            partial.write_bytes(b"half a checkpoint")
        AtomicCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.zeros(1)}}, tmp_path / "last.ckpt"
        )
        assert not dead.exists() and living.exists() and other.exists()
        assert torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w"].shape == (
            1,
        )
    finally:
        alive.kill()
        alive.wait()


def test_reaping_a_dead_run_deletes_its_owners_partial_writes(tmp_path, store):
    client = MlflowClient(store["tracking_uri"])
    experiment = client.create_experiment("e", artifact_location=store["artifact_location"])
    pid, folder = dead_pid(), tmp_path / "checkpoints"
    folder.mkdir()
    run = client.create_run(
        experiment,
        tags={HOST_TAG: socket.gethostname(), PID_TAG: str(pid), CHECKPOINT_DIR_TAG: str(folder)},
    )
    partial, kept = folder / f".last.ckpt.tmp-{pid}", folder / "notes.txt"
    partial.write_bytes(b"half a checkpoint")
    kept.write_text("not a partial write")
    assert len(reap_dead_owners(client, experiment)) == 1
    assert not partial.exists() and kept.exists()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
