"""A tracking store is data, possibly someone else's: its tags and artifact locations never choose
where a command reads, writes or deletes; the run lock follows no link planted beside the store;
an owner tag that names no process is no error. Each store here is crafted by the test."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import copy_store, fast_config
from digitlab.errors import DigitlabError
from digitlab.tracking import store as tracking
from digitlab.tracking.owners import (
    HOST_TAG,
    PID_TAG,
    START_TAG,
    claim_run,
    reap_dead_owners,
    start_time,
)
from digitlab.tracking.tags import CHECKPOINT_DIR_TAG, RUN_ID_KEY
from digitlab.training.checkpoints import find_resume

HOST = socket.gethostname()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def next_command(store: dict[str, str]):
    """What every digitlab command does first on a store: (client, experiment id), dead owners'
    runs reaped."""
    return tracking.open_experiment(OmegaConf.create({**store, "experiment_name": "digitlab"}))


def stamped(path, run_id: str, **more) -> None:
    """A small checkpoint stamped with ``run_id``, as a run's ``last.ckpt`` is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"net.w": torch.ones(2)}, RUN_ID_KEY: run_id, **more}, path)


def set_artifact_uri(store: dict[str, str], run_id: str, uri: str) -> None:
    """What an edited store can say: the run's artifacts live anywhere."""
    connection = sqlite3.connect(store["tracking_uri"].removeprefix("sqlite:///"))
    with connection:
        connection.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (uri, run_id))
    connection.close()


def test_the_reaper_writes_deletes_and_uploads_nothing_where_a_store_says(tmp_path, store):
    """A RUNNING run of a dead process whose artifact location is a victim folder and whose
    checkpoint-folder tag names the attacker's file: the next command marks it KILLED, and the
    victim's checkpoint is as it was, nothing in the named folder is deleted or logged."""
    client, experiment = next_command(store)
    victim = tmp_path / "victim" / "checkpoints" / "last.ckpt"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"the user's own checkpoint")
    planted, pid = tmp_path / "planted", dead_pid()
    planted.mkdir()
    (planted / "last.ckpt").write_bytes(b"the attacker's bytes")
    partial = planted / f".last.ckpt.tmp-{pid}"
    partial.write_bytes(b"a file of someone's")
    run_id = client.create_run(
        experiment,
        run_name="crafted",
        tags={HOST_TAG: HOST, PID_TAG: str(pid), CHECKPOINT_DIR_TAG: str(planted)},
    ).info.run_id
    set_artifact_uri(store, run_id, str(tmp_path / "victim"))

    (line,) = reap_dead_owners(client, experiment)

    assert victim.read_bytes() == b"the user's own checkpoint"
    assert partial.read_bytes() == b"a file of someone's"
    assert (planted / "last.ckpt").read_bytes() == b"the attacker's bytes"
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["digitlab.killed_because"] == f"its process {pid} on {HOST} died"
    assert "logged" not in line and line.endswith(f"continue with: resume={run_id}"), line


def test_resume_by_run_id_finds_its_stamped_last_checkpoint_in_the_job_folders(
    tmp_path, store, monkeypatch
):
    """The run's own job folder, found by the command under the project's outputs/ and
    multirun/, not the folder its tag names (where a stamped file of the attacker's waits); a
    newer job's checkpoint of another run is passed over, and so is a store's copy (MLflow's
    artifacts: the fallback, downloaded with the run's best.ckpt)."""
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    client, experiment = next_command(store)
    planted = tmp_path / "planted"
    run_id = client.create_run(experiment, tags={CHECKPOINT_DIR_TAG: str(planted)}).info.run_id
    client.set_terminated(run_id, "KILLED")
    stamped(planted / "last.ckpt", run_id, marker="planted")
    own = tmp_path / "outputs" / "2026-12-01" / "10-00-00" / "checkpoints" / "last.ckpt"
    stamped(own, run_id, marker="own")
    other = tmp_path / "multirun" / "2026-12-02" / "09-00-00" / "0" / "checkpoints" / "last.ckpt"
    stamped(other, "0" * 32, marker="another run's")
    copy = tmp_path / "outputs" / "mlruns" / run_id / "artifacts" / "checkpoints" / "last.ckpt"
    stamped(copy, run_id, marker="a store's copy")
    os.utime(own, (1, 1))  # older than the others

    resume = find_resume(run_id, client, tmp_path / "job" / "resume")

    assert (resume.path, resume.run_id, resume.checkpoint["marker"]) == (own, run_id, "own")


def test_resume_of_a_reaped_run_without_a_checkpoint_says_so_in_one_line(
    tmp_path, store, monkeypatch
):
    """Killed before its first epoch ended: no job folder of the command's holds its last.ckpt
    and none is logged. Its tag names a folder holding one: never read."""
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    client, experiment = next_command(store)
    planted = tmp_path / "planted"
    tags = {HOST_TAG: HOST, PID_TAG: str(dead_pid()), CHECKPOINT_DIR_TAG: str(planted)}
    run_id = client.create_run(experiment, tags=tags).info.run_id
    stamped(planted / "last.ckpt", run_id)
    next_command(store)
    assert client.get_run(run_id).info.status == "KILLED"

    with pytest.raises(DigitlabError, match=f"^run {run_id} has no last.ckpt to resume from") as e:
        find_resume(run_id, client, tmp_path / "job" / "resume")
    assert "\n" not in str(e.value)


def test_the_run_lock_follows_no_link_planted_beside_the_store(tmp_path, store):
    """The store's folder is the sender's: a link where a lock file could be expected points at
    a file of the user's, which stays as it was while the run is claimed and released."""
    client, experiment = next_command(store)
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, "KILLED")
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    locks = tmp_path / "mlruns" / ".locks"
    locks.mkdir()
    (locks / f"{run_id}.lock").symlink_to(victim)

    claim_run(client, run_id).release()

    assert victim.read_text() == "the user's file"


def test_a_lock_folder_that_is_not_a_private_folder_is_refused_in_one_line(
    tmp_path, store, monkeypatch
):
    """Where the locks live already exists, open to others, or as a link elsewhere: refused
    before any lock file is made there."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    client, experiment = next_command(store)
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, "KILLED")
    folder = runtime / "digitlab-locks"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(DigitlabError, match="not a real folder owned by you with mode 0700"):
        claim_run(client, run_id)
    folder.rmdir()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    folder.symlink_to(shared)
    with pytest.raises(DigitlabError, match="not a real folder owned by you with mode 0700"):
        claim_run(client, run_id)
    assert list(shared.iterdir()) == []
    folder.unlink()
    claim_run(client, run_id).release()  # made anew, private
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize("pid", ["abc", "-5", str(10**30), "1e3"])
def test_an_owner_tag_naming_no_process_is_left_alone_without_a_traceback(tmp_path, store, pid):
    client, experiment = next_command(store)
    run_id = client.create_run(experiment, tags={HOST_TAG: HOST, PID_TAG: pid}).info.run_id
    next_command(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # whose process it is is unknown
    claim_run(client, run_id).release()


def test_an_owner_start_time_of_another_format_falls_back_to_the_pid(tmp_path, store):
    """Owner tags of earlier versions held the start in clock ticks: their live process is not
    taken for dead. A start time of psutil's that differs is another process on a reused pid."""
    client, experiment = next_command(store)
    owner = subprocess.Popen(["sleep", "60"])
    try:
        starts = {"ticks": "12345", "reused": "1000000000.25", "own": start_time(owner.pid)}
        runs = {
            name: client.create_run(
                experiment, tags={HOST_TAG: HOST, PID_TAG: str(owner.pid), START_TAG: start}
            ).info.run_id
            for name, start in starts.items()
        }
        next_command(store)
        statuses = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    finally:
        owner.kill()
        owner.wait()
    assert statuses == {"ticks": "RUNNING", "reused": "KILLED", "own": "RUNNING"}


# --- through training: the checkpoints a resume starts from --------------------------------


@pytest.fixture
def stopped(data_root, migrated_db, tmp_path):
    """A one-epoch run of a two-epoch budget in the job folder ``first``: (its result, its
    store, a function composing the config to continue it)."""
    from digitlab.training.run import train

    store = copy_store(tmp_path, migrated_db)

    def config(*overrides: str):
        return fast_config(data_root, store, "model=mlp", *overrides)

    result = train(config(), output_dir=tmp_path / "first")
    return result, store, config


def test_a_reaped_run_resumes_from_the_last_checkpoint_in_its_own_job_folder(stopped, tmp_path):
    """SIGKILL left the run RUNNING under a dead process, and the store's tag names another
    folder holding a checkpoint stamped with the run's id: the resume in a job folder beside
    the first continues from the first job's own last.ckpt."""
    from digitlab.training.run import train

    result, store, config = stopped
    run_id, first = result["run_id"], tmp_path / "first" / "checkpoints"
    client = MlflowClient(store["tracking_uri"])
    client.update_run(run_id, status="RUNNING")
    planted = tmp_path / "planted"
    planted.mkdir()
    torch.save({**torch.load(first / "last.ckpt", weights_only=True), "marker": 1}, planted / "x")
    (planted / "x").rename(planted / "last.ckpt")
    for key, value in {
        HOST_TAG: HOST,
        PID_TAG: str(dead_pid()),
        CHECKPOINT_DIR_TAG: str(planted),
    }.items():
        client.set_tag(run_id, key, value)

    resumed = train(config(f"resume={run_id}", "trainer.max_epochs=2"), tmp_path / "second")

    run = client.get_run(run_id)
    assert resumed["run_id"] == run_id and run.info.status == "FINISHED"
    assert run.data.tags["digitlab.resumed_from"] == str(first / "last.ckpt")
    assert "digitlab.killed_because" in run.data.tags
    steps = [m.step for m in client.get_metric_history(run_id, "val/acc")]
    assert steps == [1, 2]  # epochs, counted from 1


def test_a_resume_takes_no_best_checkpoint_from_a_path_its_state_names(stopped, tmp_path):
    """A checkpoint handed over, whose ModelCheckpoint state names a same-run best.ckpt in
    another folder, with a score no epoch can beat: that file is not taken as the run's best;
    the best is counted afresh in the run's own folder."""
    from digitlab.training.run import train

    _, _, config = stopped
    first = tmp_path / "first" / "checkpoints"
    elsewhere = tmp_path / "elsewhere" / "best.ckpt"
    elsewhere.parent.mkdir()
    torch.save({**torch.load(first / "best.ckpt", weights_only=True), "marker": 1}, elsewhere)
    checkpoint = torch.load(first / "last.ckpt", weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint") and state.get("monitor"):
            state.update(best_model_path=str(elsewhere), best_model_score=torch.tensor(2.0))
    handed = tmp_path / "handed" / "last.ckpt"
    handed.parent.mkdir()
    torch.save(checkpoint, handed)

    resumed = train(config(f"resume={handed}", "trainer.max_epochs=2"), tmp_path / "second")

    own = tmp_path / "second" / "checkpoints" / "best.ckpt"
    assert resumed["best_checkpoint"] == str(own.resolve())
    assert "marker" not in torch.load(own, weights_only=True)


@pytest.mark.parametrize("target", ["victim.txt", "absent.txt"])
def test_opening_a_store_follows_no_link_planted_at_its_lock_file(tmp_path, migrated_db, target):
    """``<db>.lock`` beside a store someone else prepared: a link there is not followed, so the
    file it points at is neither created nor changed."""
    from conftest import copy_store
    from digitlab.tracking.store import open_client

    store = copy_store(tmp_path, migrated_db)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "mlruns" / "mlflow.db.lock").symlink_to(tmp_path / target)
    with pytest.raises(DigitlabError, match="mlflow.db.lock is a symbolic link"):
        open_client(store["tracking_uri"])
    assert victim.read_text() == "precious"
    assert not (tmp_path / "absent.txt").exists()
