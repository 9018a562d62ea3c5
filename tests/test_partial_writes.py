"""A checkpoint write cut short by SIGKILL leaves ``.<name>.tmp-<pid>`` (hundreds of MB): the next
write into that folder deletes it. (The command that reaps the dead run deletes nothing: the
folder its store names is not its to touch, tests/security/test_stores_and_locks.py.)"""

from __future__ import annotations

import subprocess

import torch

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
