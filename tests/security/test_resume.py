"""``resume=`` takes state from a checkpoint, never paths; and one process trains a run at a
time."""

from __future__ import annotations

import socket
import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import copy_store, fast_config
from digitlab.errors import DigitlabError
from digitlab.tracking.owners import HOST_TAG, PID_TAG, START_TAG, claim_run, start_time
from digitlab.training.run import train


@pytest.fixture
def stopped(data_root, migrated_db, tmp_path):
    """A one-epoch run of a two-epoch budget, as if interrupted: (its result, its store, a
    function composing the config to continue it)."""
    store = copy_store(tmp_path, migrated_db)

    def config(*overrides: str):
        return fast_config(data_root, store, "model=mlp", *overrides)

    result = train(config(), output_dir=tmp_path / "first")
    MlflowClient(store["tracking_uri"]).set_terminated(result["run_id"], "KILLED")
    return result, store, config


def test_a_crafted_resume_checkpoint_never_writes_or_deletes_outside_the_runs_folder(
    stopped, tmp_path
):
    """A checkpoint whose ModelCheckpoint state names files in a victim folder (a worse top-k
    model, the last checkpoint, the best one): resuming from it trains on, and the victim's
    files are untouched, no file is added there; the run's checkpoints are in its own folder."""
    result, _, config = stopped
    victim = tmp_path / "victim"
    victim.mkdir()
    files = {"precious.ckpt": b"keep me", "notes.txt": b"mine", "best.ckpt": b"not a checkpoint"}
    for name, data in files.items():
        (victim / name).write_bytes(data)
    checkpoint = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            state.update(
                dirpath=str(victim),
                best_model_path=str(victim / "best.ckpt"),
                kth_best_model_path=str(victim / "precious.ckpt"),
                last_model_path=str(victim / "notes.txt"),
                best_k_models={str(victim / "precious.ckpt"): torch.tensor(-1.0)},
                best_model_score=torch.tensor(-1.0),
                kth_value=torch.tensor(-1.0),
            )
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)

    resumed = train(
        config(f"resume={crafted}", "trainer.max_epochs=2"), output_dir=tmp_path / "second"
    )
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == files
    assert resumed["run_id"] == result["run_id"]  # the same run continued
    own = tmp_path / "second" / "checkpoints"
    assert {p.name for p in own.glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    assert resumed["best_checkpoint"] == str((own / "best.ckpt").resolve())


def test_a_second_resume_of_a_run_being_trained_is_refused_naming_the_owner(stopped, tmp_path):
    """Another process holds the run (its lock): a resume stops in one line naming that process,
    and logs nothing into the run."""
    result, store, config = stopped
    client = MlflowClient(store["tracking_uri"])
    history = client.get_metric_history(result["run_id"], "val/acc")
    held = claim_run(client, result["run_id"])  # what a running resume holds
    try:
        with pytest.raises(
            DigitlabError,
            match=f"run {result['run_id']} is being trained by "
            f"process \\d+ on {socket.gethostname()}: one process trains a run",
        ):
            train(
                config(f"resume={result['run_id']}", "trainer.max_epochs=2"),
                output_dir=tmp_path / "second",
            )
    finally:
        held.release()
    assert client.get_metric_history(result["run_id"], "val/acc") == history
    assert client.get_run(result["run_id"]).info.status == "KILLED"


def test_a_run_running_under_a_live_owner_is_refused_even_without_its_lock(stopped, tmp_path):
    """The run's tags name a live process as its owner (a resume on another machine sharing the
    store holds no lock here): refused, naming host and pid; the owner's run is left as it is."""
    result, store, config = stopped
    client = MlflowClient(store["tracking_uri"])
    owner = subprocess.Popen(["sleep", "60"])
    try:
        client.update_run(result["run_id"], status="RUNNING")
        for key, value in {
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(owner.pid),
            START_TAG: start_time(owner.pid),
        }.items():
            client.set_tag(result["run_id"], key, value)
        with pytest.raises(
            DigitlabError,
            match=f"run {result['run_id']} is RUNNING in process "
            f"{owner.pid} on {socket.gethostname()}",
        ):
            train(
                config(f"resume={result['run_id']}", "trainer.max_epochs=2"),
                output_dir=tmp_path / "second",
            )
        assert client.get_run(result["run_id"]).info.status == "RUNNING"
    finally:
        owner.kill()
        owner.wait()
