"""Ctrl-C and SIGTERM with real processes: run KILLED, last checkpoint logged, resume matches an
uninterrupted run; a non-finite loss fails the run and keeps the last good checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import write_mnist
from digitlab.errors import DigitlabError
from digitlab.training.run import train

# LeNet on 2 000 images: each epoch takes long enough (about a second) that the signal, sent as
# soon as the first epoch's checkpoint appears, arrives well before the last of 4 epochs ends.
# A per-step learning-rate schedule and random augmentation: a resume must continue both exactly.
TRAIN = [
    "model=lenet", "trainer.max_epochs=4", "data.val_size=100", "data.batch_size=50",
    "scheduler=onecycle", "data.augment={_target_:digitlab.data.augment.RandomAffine,degrees:10}",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.deterministic=true",
    "figures.enabled=false",  # seconds per run; test_figures.py covers the pictures
]


def start(overrides: list[str], data_root: Path, store: dict, job_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "DIGITLAB_DATA": str(data_root)}
    args = [
        *TRAIN, f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}", f"hydra.run.dir={job_dir}",
        *overrides,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "digitlab", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Poll until ``path`` exists (the process writes it) or the process ends."""
    while not path.exists():
        if process.poll() is not None:  # the whole of its error, which an assert would shorten
            _, err = process.communicate()
            pytest.fail(f"exited with {process.returncode} before writing {path}:\n{err[-4000:]}")
        time.sleep(0.02)


def net_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.slow
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, store):
    data_root = write_mnist(tmp_path / "data", n_train=2000)
    client = MlflowClient(store["tracking_uri"])
    client.search_experiments()  # this client's schema check now, not while three jobs write
    whole = start([], data_root, store, tmp_path / "whole")
    stopped = {sig: start([], data_root, store, tmp_path / sig.name) for sig in (signal.SIGINT, signal.SIGTERM)}
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
        assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, out + err

    # Resume the Ctrl-C'd run by its id: the same MLflow run continues and finishes.
    resumed = start([f"resume={run_ids[signal.SIGINT]}"], data_root, store, tmp_path / "resumed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out + err
    run = client.get_run(run_ids[signal.SIGINT])
    assert run.info.status == "FINISHED"
    # Resume the SIGTERM'd run from its checkpoint file: the run id stamped in it finds the run.
    checkpoint = tmp_path / "SIGTERM" / "checkpoints" / "last.ckpt"
    by_path = start([f"resume={checkpoint}"], data_root, store, tmp_path / "by_path")
    out, err = by_path.communicate(timeout=600)
    assert by_path.returncode == 0, out + err
    assert client.get_run(run_ids[signal.SIGTERM]).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 3  # continued, no new run

    (reference,) = [r for r in client.search_runs([run.info.experiment_id]) if r.info.run_id not in run_ids.values()]
    for resumed_run in (run, client.get_run(run_ids[signal.SIGTERM])):
        for name in ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss"):
            assert resumed_run.data.metrics[name] == reference.data.metrics[name], name
    ours = net_weights(tmp_path / "SIGINT" / "checkpoints" / "last.ckpt")
    theirs = net_weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 4  # every epoch's validation once: none lost, none twice


def test_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path, monkeypatch):
    from digitlab.training.classifier import DigitClassifier

    original = DigitClassifier.training_step

    def diverge(self, batch, batch_idx):  # the loss turns NaN from the 10th step on (epoch 1)
        out = original(self, batch, batch_idx)
        # global_step counts the steps before this one (Lightning steps after training_step)
        return out * float("nan") if self.global_step >= 9 else out

    monkeypatch.setattr(DigitClassifier, "training_step", diverge)
    # 200 training images: 7 steps per epoch; the plain module, one optimizer step per call
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3", "data.steps_per_call=1")
    with pytest.raises(DigitlabError, match=r"non-finite \(NaN or inf\) at step 10 \(epoch 1\)") as e:
        train(cfg, output_dir=tmp_path)
    assert "is FAILED, last good checkpoint" in str(e.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
    assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
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
def test_a_killed_process_run_is_marked_killed_by_the_next_command_and_resumes(tmp_path, store, caplog):
    """SIGKILL leaves no chance to end the run: the next command on the store finds its owner
    process dead, marks the run KILLED with its last checkpoint, says so, and resume= finishes it."""
    from omegaconf import OmegaConf

    data_root = write_mnist(tmp_path / "data", n_train=2000)
    killed = start([], data_root, store, tmp_path / "killed")
    wait_for(tmp_path / "killed" / "checkpoints" / "last.ckpt", killed)
    killed.kill()
    killed.communicate()
    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "RUNNING"  # nothing ended it

    logger = OmegaConf.create({**store, "experiment_name": "digitlab"})
    from digitlab.tracking import store as tracking

    with caplog.at_level("WARNING"):
        tracking.open_experiment(logger)  # what every digitlab command does first
    after = client.get_run(run.info.run_id)
    assert after.info.status == "KILLED"
    assert f"process {killed.pid}" in after.data.tags["digitlab.killed_because"]
    assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    (line,) = [r.getMessage() for r in caplog.records if run.info.run_id in r.getMessage()]
    assert f"continue with: resume={run.info.run_id}" in line and "\n" not in line

    resumed = start([f"resume={run.info.run_id}"], data_root, store, tmp_path / "resumed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    final = client.get_run(run.info.run_id)
    assert final.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 4  # every epoch validated once: none lost, none repeated


def test_a_full_disk_fails_the_run_in_one_line_and_leaves_no_half_written_checkpoint(
        make_cfg, tmp_path, monkeypatch):
    """The third checkpoint write (in epoch 2, after epoch 1's best.ckpt and last.ckpt) runs out
    of space half way."""
    from lightning.fabric.plugins.io import torch_io

    original, writes = torch_io._atomic_save, []

    def disk_fills_up(checkpoint, path):
        writes.append(path)
        if len(writes) < 3:
            return original(checkpoint, path)
        with open(path, "wb") as f:  # what a full disk leaves: the first bytes, then an error
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", disk_fills_up)
    cfg = make_cfg("model=mlp", "trainer.max_epochs=3")
    with pytest.raises(DigitlabError, match=r"cannot write checkpoint .*\.ckpt \(No space left on device\)") as e:
        train(cfg, output_dir=tmp_path)
    assert "\n" not in str(e.value) and "is FAILED" in str(e.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial file
    for name in ("best.ckpt", "last.ckpt"):  # both still epoch 1's, whole and loadable
        assert torch.load(folder / name, weights_only=True)["epoch"] == 0
    assert len(writes) == 3
