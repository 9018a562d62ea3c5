"""Ctrl-C and SIGTERM with real processes: run KILLED, last checkpoint logged, resume matches an
uninterrupted run; a non-finite loss fails the run and keeps the last good checkpoint."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import warm
from conftest import wait_for, write_mnist
from digitlab.errors import DigitlabError
from digitlab.tracking.tags import RUN_ID_KEY
from digitlab.training.run import train

# LeNet on 2 000 images: each epoch takes long enough (about a second) that the signal, sent as
# soon as the first epoch's checkpoint appears, arrives well before the last of 4 epochs ends.
# A per-step learning-rate schedule and random augmentation: a resume must continue both exactly.
TRAIN = [
    "model=lenet",
    "trainer.max_epochs=4",
    "data.val_size=100",
    "data.batch_size=50",
    "scheduler=onecycle",
    "data.augment={_target_:digitlab.data.augment.RandomAffine,degrees:10}",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "figures.enabled=false",  # seconds per run; test_figures.py covers the pictures
]


def start(overrides: list[str], data_root: Path, store: dict, job_dir: Path) -> warm.Started:
    """``python -m digitlab`` with these overrides, running (forked warm: tests/warm.py)."""
    env = {**os.environ, "DIGITLAB_DATA": str(data_root)}
    args = [
        *TRAIN,
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
        f"hydra.run.dir={job_dir}",
        *overrides,
    ]
    return warm.start("digitlab", *args, env=env)


def net_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.slow
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, store):
    data_root = write_mnist(tmp_path / "data", n_train=2000)
    client = MlflowClient(store["tracking_uri"])
    client.search_experiments()  # this client's schema check now, not while three jobs write
    whole = start([], data_root, store, tmp_path / "whole")
    stopped = {
        sig: start([], data_root, store, tmp_path / sig.name)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    for sig, process in stopped.items():
        wait_for(tmp_path / sig.name / "checkpoints" / "last.ckpt", process)
        process.send_signal(sig)
    run_ids = {}
    for sig, process in stopped.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 128 + sig, out + err
        assert "Traceback" not in err
        (line,) = [x for x in err.splitlines() if x.startswith("digitlab: interrupted: ")]
        assert f"{sig.name} stopped training" in line and "KILLED" in line
        run_id = line.split("run ")[1].split()[0]
        assert line.endswith(f"continue with: resume={run_id}"), line  # the hint, runnable as is
        run_ids[sig] = run_id
        assert client.get_run(run_id).info.status == "KILLED"
        assert "checkpoints/last.ckpt" in {
            a.path for a in client.list_artifacts(run_id, "checkpoints")
        }
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, out + err

    # Both resumed at once: the Ctrl-C'd run by its id (the same MLflow run continues and
    # finishes), the SIGTERM'd run from its checkpoint file (the run id stamped in it finds it).
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "SIGINT" / "checkpoints").iterdir()}
    resumed = start([f"resume={run_ids[signal.SIGINT]}"], data_root, store, tmp_path / "resumed")
    checkpoint = tmp_path / "SIGTERM" / "checkpoints" / "last.ckpt"
    by_path = start([f"resume={checkpoint}"], data_root, store, tmp_path / "by_path")
    for process in (resumed, by_path):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
        # The best checkpoint carried over into the new folder is the point, not a warning.
        assert "exists and is not empty" not in err, err
    # A resume writes into its own job's folder only: the interrupted job's files are as they were.
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "SIGINT" / "checkpoints").iterdir()
    } == before
    run = client.get_run(run_ids[signal.SIGINT])
    assert run.info.status == "FINISHED"
    assert client.get_run(run_ids[signal.SIGTERM]).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 3  # continued, no new run

    (reference,) = [
        r
        for r in client.search_runs([run.info.experiment_id])
        if r.info.run_id not in run_ids.values()
    ]
    for resumed_run in (run, client.get_run(run_ids[signal.SIGTERM])):
        for name in ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss"):
            assert resumed_run.data.metrics[name] == reference.data.metrics[name], name
    ours = net_weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    theirs = net_weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert (
        len(steps) == len(set(steps)) == 4
    )  # every epoch's validation once: none lost, none twice


def test_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    from digitlab.training.classifier import DigitClassifier

    original = DigitClassifier.training_step

    def diverge(self, batch, batch_idx):  # the loss turns NaN from the 10th step on (epoch 1)
        out = original(self, batch, batch_idx)
        # global_step counts the steps before this one (Lightning steps after training_step)
        return out * float("nan") if self.global_step >= 9 else out

    monkeypatch.setattr(DigitClassifier, "training_step", diverge)
    # 200 training images: 7 steps per epoch; the plain module, one optimizer step per call
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "data.steps_per_call=1")
    with pytest.raises(
        DigitlabError, match=r"non-finite \(NaN or inf\) at step 10 \(epoch 1\)"
    ) as e:
        train(cfg, output_dir=tmp_path)
    assert "is FAILED, last good checkpoint" in str(e.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
    assert "checkpoints/last.ckpt" in {
        a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")
    }
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_non_finite_loss_names_its_own_step_among_several_per_call(make_cfg, tmp_path, monkeypatch):
    from digitlab.models import MLP

    original, forwards = MLP.forward, []

    def diverge(self, x):  # the 10th training forward (optimizer step 10, epoch 1) turns NaN
        out = original(self, x)
        if self.training:
            forwards.append(1)
            if len(forwards) >= 10:
                return out * float("nan")
        return out

    monkeypatch.setattr(MLP, "forward", diverge)
    # 7 steps per epoch in calls of 5 + 2: step 10 is the third step of epoch 1's first call
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "data.steps_per_call=5")
    with pytest.raises(DigitlabError, match=r"non-finite \(NaN or inf\) at step 10 \(epoch 1\)"):
        train(cfg, output_dir=tmp_path)


def test_same_seed_gives_identical_metrics(make_cfg, tmp_path):
    cfg = make_cfg("model=lenet_small", "trainer.max_epochs=2", "trainer.deterministic=true")
    first = train(cfg, output_dir=tmp_path / "a")["metrics"]
    second = train(cfg, output_dir=tmp_path / "b")["metrics"]
    assert first.pop("train/samples_per_sec") > 0 and second.pop("train/samples_per_sec") > 0
    assert first == second


@pytest.mark.slow
def test_a_killed_process_run_is_marked_killed_by_the_next_command_and_resumes(tmp_path, store):
    """SIGKILL leaves no chance to end the run: the next command on the store, here the resume
    itself, finds its owner process dead, marks the run KILLED with its last checkpoint, says so
    in one line, and then continues and finishes it."""
    data_root = write_mnist(tmp_path / "data", n_train=2000)
    killed = start([], data_root, store, tmp_path / "killed")
    wait_for(tmp_path / "killed" / "checkpoints" / "last.ckpt", killed)
    killed.kill()
    killed.communicate()
    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "RUNNING"  # nothing ended it
    assert run.data.tags["digitlab.owner.pid"] == str(killed.pid)
    assert run.data.tags["digitlab.owner.host"] == socket.gethostname()

    resumed = start([f"resume={run.info.run_id}"], data_root, store, tmp_path / "resumed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    (line,) = [x for x in (out + err).splitlines() if "was left RUNNING" in x]
    assert line.endswith(
        f"run {run.info.run_id} ({run.info.run_name}) was left RUNNING by process {killed.pid}, "
        "which died: marked KILLED; its job folder keeps its last.ckpt, if an epoch ended: "
        f"continue with: resume={run.info.run_id}"
    ), line
    reaped = client.get_run(run.info.run_id).data.tags["digitlab.killed_because"]
    assert reaped == f"its process {killed.pid} on {socket.gethostname()} died"
    final = client.get_run(run.info.run_id)
    # found in the killed job's folder, beside the resume's own
    assert final.data.tags["digitlab.resumed_from"] == str(
        tmp_path / "killed" / "checkpoints" / "last.ckpt"
    )
    assert final.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert (
        len(steps) == len(set(steps)) == 4
    )  # every epoch validated once: none lost, none repeated


def test_a_full_disk_fails_the_run_in_one_line_and_leaves_no_half_written_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    """The third checkpoint write (in epoch 2, after epoch 1's best.ckpt and last.ckpt) runs out
    of space half way, in Lightning's own writer."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    original, writes = TorchCheckpointIO.save_checkpoint, []

    def disk_fills_up(self, checkpoint, path, storage_options=None):
        writes.append(path)
        if len(writes) < 3:
            return original(self, checkpoint, path, storage_options)
        with open(path, "wb") as f:  # what a full disk leaves: the first bytes, then an error
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", disk_fills_up)
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3")
    with pytest.raises(
        DigitlabError, match=r"cannot write checkpoint .*\.ckpt \(No space left on device\)"
    ) as e:
        train(cfg, output_dir=tmp_path)
    assert "\n" not in str(e.value) and "is FAILED" in str(e.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial file
    for name in ("best.ckpt", "last.ckpt"):  # both still epoch 1's, whole and loadable
        assert torch.load(folder / name, weights_only=True)["epoch"] == 0


def test_an_artifact_folder_unwritable_mid_run_fails_the_run_in_one_line(
    make_cfg, tmp_path, monkeypatch
):
    """The run's MLflow artifact folder stops taking files once the run has begun (its
    config.yaml is in): the run ends FAILED with one line naming the file, and the checkpoints
    on disk are whole, ready for resume=."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    original, writes = LocalArtifactRepository.log_artifact, []

    def unwritable(self, local_file, artifact_path=None):
        writes.append(Path(local_file).name)
        if len(writes) < 2:
            return original(self, local_file, artifact_path)
        raise PermissionError(13, "Permission denied", f"{self.artifact_dir}/{writes[-1]}")

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", unwritable)
    cfg = make_cfg("model=mlp", "trainer.max_epochs=2")
    with pytest.raises(DigitlabError) as e:
        train(cfg, output_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert re.fullmatch(
        r"cannot write \S+/artifacts/best\.ckpt \(Permission denied\): make its folder writable, "
        r"or free disk space there; run \w+ is FAILED, last good checkpoint \S+/last\.ckpt "
        r"\(not logged to the run: Permission denied\)",
        message,
    ), message
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
    assert writes == ["config.yaml", "best.ckpt", "last.ckpt"]
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1  # both epochs, whole


class SignalAt:
    """A callback that sends this process ``signum`` at one point of the fit or the test pass,
    as a user's Ctrl-C would arrive: through the signal handlers, not as a raised exception."""

    def __init__(self, hook: str, signum: int = signal.SIGINT) -> None:
        import lightning as L

        def send(*args) -> None:
            trainer = args[0]
            if hook == "on_train_batch_start" and not (trainer.current_epoch == 0 and args[3] == 2):
                return  # the third step of the first epoch
            os.kill(os.getpid(), signum)

        self.callback = type("SignalAt", (L.Callback,), {hook: lambda self, *a: send(*a)})()


def test_ctrl_c_before_the_first_epoch_ends_kills_the_run_and_says_to_start_again(
    make_cfg, tmp_path
):
    from digitlab.errors import Interrupted

    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "data.steps_per_call=1")
    with pytest.raises(Interrupted) as e:
        train(cfg, output_dir=tmp_path, callbacks=[SignalAt("on_train_batch_start").callback])
    message = str(e.value)
    assert e.value.exit_code == 130 and "\n" not in message
    assert "SIGINT stopped training" in message
    assert "has no checkpoint yet (no epoch finished): start it again" in message
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "KILLED" and run.info.run_id in message
    assert "val/acc" not in run.data.metrics  # it stopped inside epoch 0
    assert client.list_artifacts(run.info.run_id, "checkpoints") == []
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_the_run_stays_running_until_its_test_pass_has_ended(make_cfg, tmp_path):
    """Only the run's own ending sets its status: a process killed during the test pass must
    leave it RUNNING (for the next command to mark KILLED), not FINISHED without test metrics."""
    import lightning as L

    seen = {}

    class StatusAtTest(L.Callback):
        def on_test_start(self, trainer, module):
            client = trainer.logger.experiment
            seen["status"] = client.get_run(trainer.logger.run_id).info.status

    result = train(make_cfg("model=mlp"), output_dir=tmp_path, callbacks=[StatusAtTest()])
    assert seen == {"status": "RUNNING"}
    client = MlflowClient(make_cfg().logger.tracking_uri)
    assert client.get_run(result["run_id"]).info.status == "FINISHED"


def test_ctrl_c_during_the_test_pass_kills_the_run_and_a_resume_only_tests(make_cfg, tmp_path):
    """Training ended (every epoch validated, checkpoints saved) but the test pass did not:
    resume=<id> trains nothing more and records the test metrics of the best checkpoint."""
    from conftest import checkpoint_accuracy
    from digitlab.errors import Interrupted

    cfg = make_cfg("model=mlp", "trainer.max_epochs=2")
    with pytest.raises(Interrupted) as e:
        train(
            cfg, output_dir=tmp_path / "first", callbacks=[SignalAt("on_test_batch_start").callback]
        )
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "KILLED"
    assert f"continue with: resume={run_id}" in str(e.value)
    assert "test/acc" not in run.data.metrics
    assert len(client.get_metric_history(run_id, "val/acc")) == 2  # both epochs validated

    resumed = train(
        make_cfg("model=mlp", "trainer.max_epochs=2", f"resume={run_id}"),
        output_dir=tmp_path / "second",
    )
    assert resumed["run_id"] == run_id
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "val/acc")) == 2  # no epoch trained again
    best = tmp_path / "first" / "checkpoints" / "best.ckpt"
    assert after.data.metrics["test/acc"] == pytest.approx(checkpoint_accuracy(best, cfg), abs=1e-6)


def test_a_failed_non_finite_run_resumes_from_its_last_good_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    from digitlab.training.classifier import DigitClassifier

    original = DigitClassifier.training_step

    def diverge(self, batch, batch_idx):  # NaN from step 10 (epoch 1), as a bad learning rate would
        out = original(self, batch, batch_idx)
        return out * float("nan") if self.global_step >= 9 else out

    monkeypatch.setattr(DigitClassifier, "training_step", diverge)
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "data.steps_per_call=1")
    with pytest.raises(DigitlabError, match="is FAILED, last good checkpoint"):
        train(cfg, output_dir=tmp_path / "first")
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"

    monkeypatch.setattr(DigitClassifier, "training_step", original)  # the cause fixed
    resumed = train(
        make_cfg(
            "model=mlp",
            "trainer.max_epochs=4",
            "data.steps_per_call=1",
            f"resume={run.info.run_id}",
        ),
        output_dir=tmp_path / "second",
    )
    assert resumed["run_id"] == run.info.run_id
    after = client.get_run(run.info.run_id)
    assert after.info.status == "FINISHED" and "test/acc" in after.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 4  # epoch 0 kept, epochs 1-3 trained once each
    tags = after.data.tags
    assert tags["digitlab.resumed_from"] == str(tmp_path / "first" / "checkpoints" / "last.ckpt")
    assert tags["digitlab.resume_changes"] == "trainer.max_epochs: 3 -> 4"
    assert after.data.params["trainer.max_epochs"] == "3"  # params keep their first values


def test_a_checkpoint_from_another_store_starts_a_new_run_tagged_with_it(
    make_cfg, tmp_path, migrated_db
):
    from conftest import copy_store

    first = train(make_cfg("model=mlp"), output_dir=tmp_path / "first")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    (tmp_path / "other").mkdir()
    other = copy_store(tmp_path / "other", migrated_db)
    cfg = make_cfg(
        "model=mlp",
        "trainer.max_epochs=2",
        f"resume={checkpoint}",
        f"logger.tracking_uri={other['tracking_uri']}",
        f"logger.artifact_location={other['artifact_location']}",
    )
    result = train(cfg, output_dir=tmp_path / "second")
    client = MlflowClient(other["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert result["run_id"] != first["run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["digitlab.resumed_from"] == str(checkpoint)
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 1  # epoch 0 was done


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_the_next_command_ends_the_run(tmp_path, store):
    """Ctrl-C twice: the second one, arriving while the first is being honoured, leaves at once.
    SIGINT then SIGTERM (one handler for both): two different signals are both delivered, where
    a second SIGINT sent so soon could merge with the first while it is still pending."""
    import sqlite3

    from omegaconf import OmegaConf

    from digitlab.tracking import store as tracking

    data_root = write_mnist(tmp_path / "data", n_train=2000)
    process = start(["model=mlp", "trainer.max_epochs=500"], data_root, store, tmp_path / "job")
    wait_for(tmp_path / "job" / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGSTOP)  # both signals pending at once: the second arrives while
    process.send_signal(signal.SIGINT)  # the first is handled, however fast the machine
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "a second SIGTERM, exiting at once" in x]
    assert "the next digitlab command on this store marks the run KILLED" in line

    db = store["tracking_uri"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "RUNNING"  # left at once: nothing ended it
    tracking.open_experiment(OmegaConf.create({**store, "experiment_name": "digitlab"}))
    after = client.get_run(run.info.run_id)
    assert after.info.status == "KILLED"
    # resume=<run id> continues it from its job folder's last.ckpt (stamped with its id)
    last = torch.load(tmp_path / "job" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last[RUN_ID_KEY] == run.info.run_id


def test_ctrl_c_during_a_store_write_lets_the_write_finish_then_kills_the_run(
    make_cfg, tmp_path, monkeypatch
):
    """Ctrl-C landing inside a write to the MLflow store: raised there, it could leave the
    write's SQLite transaction open and this process holding the store's lock (ending the run
    would then fail "database is locked"). The write finishes; the run stops at the next batch
    and ends KILLED with its one line."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from digitlab.errors import Interrupted

    original, written = SqlAlchemyStore.log_batch, []

    def ctrl_c_during(self, run_id, metrics, *args, **kwargs):
        if metrics and not written:  # the first metrics the fit logs
            written.append(sorted(m.key for m in metrics))
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", ctrl_c_during)
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3")
    with pytest.raises(Interrupted) as e:
        train(cfg, output_dir=tmp_path)
    assert e.value.exit_code == 130 and "SIGINT stopped training" in str(e.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "KILLED"
    (keys,) = written
    assert set(keys) <= set(run.data.metrics)  # the write the signal landed in was finished
