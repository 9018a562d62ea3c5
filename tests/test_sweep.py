"""Multirun sweeps: one MLflow parent per sweep, children in the store, the summary artifacts."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

import warm
from conftest import FAST_RUN, wait_for
from digitlab.figures.plots.sweep import plot_target_vs_values
from digitlab.tracking.run import run_name
from digitlab.tracking.sweep import swept_keys
from digitlab.tracking.tables import markdown_table


def sweep(
    tmp_path, data_root, store, *overrides: str, jobs: int = 2, checkpoints: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m digitlab -m ...`` on the tiny data into the temp store (forked warm:
    tests/warm.py; the launcher's workers are new processes of their own)."""
    args = [
        "-m",
        *FAST_RUN,
        f"logger.log_checkpoint={str(checkpoints).lower()}",
        f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *overrides,
    ]
    env = {**os.environ, "DIGITLAB_JOBS": str(jobs)}
    env.pop("DIGITLAB_PARENT_RUN_ID", None)
    done = warm.run("digitlab", *args, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def runs_of(store) -> tuple[MlflowClient, object, list]:
    client = MlflowClient(store["tracking_uri"])
    experiment = client.get_experiment_by_name("digitlab")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def check_sweep(store, jobs: int, swept: list[str], checkpoints: bool = False) -> None:
    client, parent, children = runs_of(store)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["digitlab.command"].startswith("python -m digitlab -m")
    assert parent.data.params["sweep.launcher"] == "JoblibLauncher"
    assert len(children) == jobs
    assert sorted(int(c.data.tags["digitlab.job_num"]) for c in children) == list(range(jobs))
    for child in children:
        assert child.info.status == "FINISHED"
        for metric in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
            assert metric in child.data.metrics, (child.info.run_id, metric)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts == ({"config.yaml", "checkpoints"} if checkpoints else {"config.yaml"})
        if checkpoints:
            logged = client.list_artifacts(child.info.run_id, "checkpoints")
            assert [a.path for a in logged] == ["checkpoints/best.ckpt"]
    assert parent.data.metrics["sweep/finished"] == jobs
    best = max(c.data.metrics["val/acc"] for c in children)
    assert parent.data.metrics["best/val/acc"] == pytest.approx(best)

    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    expected = {"summary/jobs.csv", "summary/jobs.md", "summary/target_vs_values.png"}
    if "seed" in swept:  # a sweep over seeds also summarises across them
        expected |= {"summary/repeats.csv", "summary/repeats.md", "summary/repeats.png"}
    assert summary == expected
    folder = client.download_artifacts(parent.info.run_id, "summary")
    csv = open(f"{folder}/jobs.csv").read().splitlines()
    assert len(csv) == jobs + 1 and all(k in csv[0] for k in swept) and "val/acc" in csv[0]
    markdown = open(f"{folder}/jobs.md").read()
    assert markdown.count("| FINISHED |") == jobs and all(f"| {k} |" in markdown for k in swept)
    assert open(f"{folder}/target_vs_values.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def check_summary(done, store, root=None) -> dict[str, str]:
    """The lines the sweep prints once at its end: the best job and its val/acc, the parent run
    and the next commands (returned by what they do, as printed, e.g. "register")."""
    client, parent, children = runs_of(store)
    finished = [c for c in children if c.info.status == "FINISHED"]
    best = max(finished, key=lambda c: c.data.metrics["val/acc"])
    uri, parent_id = store["tracking_uri"], parent.info.run_id
    assert done.stdout.count("digitlab: sweep ") == 1, done.stdout[-3000:]
    head, *commands = done.stdout[done.stdout.index("digitlab: sweep ") :].splitlines()
    assert head == (
        f"digitlab: sweep {parent.info.run_name} finished: {len(children)} jobs, "
        f"{len(finished)} FINISHED"
    )
    given = {
        c.info.run_id: dict(o.split("=", 1) for o in shlex.split(c.data.tags["digitlab.overrides"]))
        for c in children
    }
    ours = given[best.info.run_id]
    varied = [k for k in ours if len({g.get(k) for g in given.values()}) > 1]
    values = " ".join(f"{k}={ours[k]}" for k in varied)  # what the best job was given
    assert commands[:2] == [
        f"  best job {best.data.tags['digitlab.job_num']} ({values}): {best.info.run_name} "
        f"(run {best.info.run_id}), val/acc {best.data.metrics['val/acc']:.4f}",
        f"  MLflow parent run {parent_id} in {uri}",
    ]
    said = dict(line.strip().split(": ", 1) for line in commands[2:])
    if "logger.log_checkpoint=true" in done.args:  # a command that would fail is not offered
        assert said["predict with the finished jobs as a committee"] == (
            f"uv run digitlab-predict --run {parent_id} --data mnist"
            f"{f' --root {root}' if root else ''} --tracking-uri {uri}"
        )
    else:
        assert said["no committee to predict with"] == (
            f"run {best.info.run_id} logged no checkpoint (logger.log_checkpoint=false)"
        )
    if "logger.log_model=true" in done.args:
        assert said["register the best job"] == (
            f"uv run digitlab-register {best.info.run_id} --name NAME --tracking-uri {uri}"
        )
    else:
        assert said["nothing to register"] == (
            f"run {best.info.run_id} logged no model (logger.log_model=false)"
        )
    return said


def run_printed(command: str, **replace: str) -> subprocess.CompletedProcess:
    """A command the sweep printed (``uv run digitlab-x ...``), run as the shell would."""
    program, *args = command.removeprefix("uv run ").split()
    module = "digitlab.cli." + program.removeprefix("digitlab-")
    return warm.run(module, *(replace.get(a, a) for a in args))


@pytest.mark.slow
def test_parallel_sweep_of_four_jobs_two_at_once_keeps_every_run_whole(tmp_path, data_root, store):
    """Two writers at once, and each worker process runs two jobs in turn (nothing of the first
    job's run leaks into the second). test_load.py has four writers from two sweeps, and
    test_concurrency.py eight."""
    done = sweep(
        tmp_path,
        data_root,
        store,
        "model=mlp",
        "hydra/launcher=parallel",
        "optimizer.lr=0.05,0.2",
        "seed=range(2)",
        "logger.log_model=true",
        jobs=2,
        checkpoints=True,
    )
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr  # two writers at once
    check_sweep(store, jobs=4, swept=["optimizer.lr", "seed"], checkpoints=True)
    # the commands it prints at its end run as printed
    said = check_summary(done, store, data_root)
    registered = run_printed(said["register the best job"], NAME="swept")
    assert registered.returncode == 0 and "registered models:/swept/1" in registered.stdout
    predicted = run_printed(said["predict with the finished jobs as a committee"])
    assert predicted.returncode == 0, predicted.stderr[-3000:]


@pytest.mark.slow
def test_a_sweeps_runs_are_named_by_what_differs_and_its_summary_names_the_winner(
    tmp_path, data_root, store
):
    """Two jobs that differ only in optimizer.lr: their run names say their lr, the closing lines
    name the best job's lr, and nothing prints in Hydra's log format."""
    done = sweep(tmp_path, data_root, store, "model=mlp", "optimizer.lr=0.05,0.1", jobs=1)
    _, _, children = runs_of(store)
    names = {c.data.params["optimizer.lr"]: c.info.run_name for c in children}
    assert names == {"0.05": "mlp-mnist-sgd-s42-lr=0.05", "0.1": "mlp-mnist-sgd-s42-lr=0.1"}
    check_summary(done, store)
    assert "][INFO] - " not in done.stdout + done.stderr, done.stdout[-3000:]


def test_a_run_name_says_a_sweeps_values_the_name_does_not_hold():
    choices = {"model": "mlp", "data": "mnist", "optimizer": "sgd"}
    swept = {"model": "mlp", "seed": "1", "optimizer.lr": "0.012345678", "data.augment": "true"}
    assert run_name(choices, 1, swept) == "mlp-mnist-sgd-s1-lr=0.01235-augment=true"
    # two swept keys ending alike are named in full
    swept = {"optimizer.lr": "0.1", "scheduler.lr": "0.2"}
    assert run_name(choices, 1, swept).endswith("-s1-optimizer.lr=0.1-scheduler.lr=0.2")


@pytest.mark.slow
def test_optuna_search_records_its_study_in_the_parent(tmp_path, data_root, store):
    done = sweep(tmp_path, data_root, store, "experiment=search", "hydra.sweeper.n_trials=2")
    client, parent, children = runs_of(store)
    said = check_summary(done, store)
    serve, _, link = said["the study in optuna-dashboard"].partition(", then open ")
    assert serve.startswith("uv run optuna-dashboard --host 127.0.0.1 ")
    assert link == parent.data.tags["optuna.dashboard"]
    assert parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    assert parent.data.params["sweep.params.optimizer.lr"] == "tag(log, interval(0.005, 0.3))"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    best = max(c.data.metrics["val/acc"] for c in children)
    assert parent.data.metrics["optuna/best_value"] == pytest.approx(best)
    assert "optuna.best.optimizer.lr" in parent.data.tags
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/optimization_results.yaml" in summary


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
def test_a_leaked_parent_id_makes_a_child_only_inside_a_multirun(monkeypatch, mode):
    """A parent id left in the environment (a sweep's, inherited by a later command) must not
    make a single run its child: only a job of a Hydra multirun is one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from digitlab.config import CONF_DIR
    from digitlab.tracking.sweep import PARENT_ENV, sweep_tags

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=mlp"], return_hydra_config=True)
    cfg.hydra.mode, cfg.hydra.job.num = RunMode[mode], 3
    monkeypatch.setenv(PARENT_ENV, "f" * 32)
    HydraConfig.instance().set_config(cfg)
    try:
        tags = sweep_tags()
    finally:
        HydraConfig.instance().cfg = None
    if mode == "RUN":
        assert tags == {}
    else:  # the same environment inside a multirun: a child (so the check above can fail)
        assert tags["mlflow.parentRunId"] == "f" * 32 and tags["digitlab.job_num"] == "3"


def test_summary_helpers_keep_only_swept_keys_and_draw_every_job():
    rows = [
        {"job": i, "optimizer.lr": lr, "model": "mlp", "val/acc": acc}
        for i, (lr, acc) in enumerate([("0.001", 0.5), ("0.1", 0.9), ("1.0", None)])
    ]
    assert swept_keys(rows, ["optimizer.lr", "model"]) == ["optimizer.lr"]
    figure = plot_target_vs_values(rows, ["optimizer.lr", "model"], "val/acc")
    assert len(figure.axes) == 2
    assert (
        len(figure.axes[0].collections[0].get_offsets()) == 2
    )  # the job without val/acc is left out
    assert figure.axes[0].get_xscale() == "log"  # 0.001 .. 0.1 spans two decades

    import pandas as pd

    table = markdown_table(pd.DataFrame(rows))
    assert table.splitlines()[0] == "| job | optimizer.lr | model | val/acc |"
    assert "| 1 | 0.1 | mlp | 0.9000 |" in table and table.splitlines()[-1].endswith("|  |")


def sweep_process(tmp_path, data_root, store, *overrides: str) -> warm.Started:
    """A ``-m`` sweep with the basic launcher (jobs one after another), in a session of its own,
    running (forked warm: tests/warm.py)."""
    args = [
        "-m",
        *FAST_RUN,
        f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_PARENT_RUN_ID"}
    return warm.start("digitlab", *args, env=env, new_session=True)


def statuses(store) -> tuple[str, list[str]]:
    client, parent, children = runs_of(store)
    return parent.info.status, sorted(c.info.status for c in children)


@pytest.mark.slow
def test_a_failing_job_fails_the_sweep_and_leaves_nothing_running(tmp_path, data_root, store):
    # The second job diverges (lr 1e9) after its run began; the third never starts.
    process = sweep_process(tmp_path, data_root, store, "model=mlp", "optimizer.lr=0.05,1e9,0.1")
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-3000:]
    assert "digitlab: error: the training loss became non-finite" in err and "Traceback" not in err
    client, parent, children = runs_of(store)
    assert parent.info.status == "FAILED"
    jobs = {c.data.params["optimizer.lr"]: c.info.status for c in children}
    assert jobs == {"0.05": "FINISHED", "1000000000.0": "FAILED"}


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_kills_the_job_and_the_parent(tmp_path, store):
    from conftest import write_mnist

    data_root = write_mnist(tmp_path / "data", n_train=2000)
    process = sweep_process(
        tmp_path,
        data_root,
        store,
        "model=lenet",
        "trainer.max_epochs=4",
        "data.val_size=100",
        "data.batch_size=50",
        "seed=1,2",
    )
    wait_for(tmp_path / "multirun" / "0" / "checkpoints" / "last.ckpt", process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err[-3000:]
    assert "digitlab: interrupted: SIGINT stopped training" in err
    assert statuses(store) == ("KILLED", ["KILLED"])  # job 1 never started; nothing RUNNING


@pytest.mark.slow
def test_ctrl_c_in_a_parallel_sweep_ends_every_run_killed_in_one_line(tmp_path, store):
    """Both jobs run at once in joblib's worker processes, which the launcher stops when the
    sweep's own process gets Ctrl-C: the sweep still ends every run KILLED before it exits."""
    from conftest import write_mnist

    data_root = write_mnist(tmp_path / "data", n_train=2000)
    process = sweep_process(
        tmp_path,
        data_root,
        store,
        "model=lenet",
        "trainer.max_epochs=20",
        "data.val_size=100",
        "data.batch_size=50",
        "seed=1,2",
        "hydra/launcher=parallel",
    )
    jobs = tmp_path / "multirun"
    for n in (0, 1):
        wait_for(jobs / str(n) / "checkpoints" / "last.ckpt", process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err
    client, parent, children = runs_of(store)
    (line,) = [x for x in err.splitlines() if "stopped the sweep" in x]
    said = (
        "digitlab: interrupted: SIGINT stopped the sweep; "
        f"its parent run {parent.info.run_id} is KILLED"
    )
    # The rest is there when the sweep ended a stopped job's run itself (a job that had time to
    # end its own run says so in its own line).
    also = ", and so are the runs of the jobs it stopped (resume=<run id> continues one)"
    assert line in (said, said + also), line
    assert parent.info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]  # none left RUNNING
    import torch

    from digitlab.tracking.tags import RUN_ID_KEY

    # Each can be continued: resume=<run id> finds the last.ckpt stamped with its id in its job
    # folder (a run the sweep ended itself has it logged too).
    stamps = {
        torch.load(jobs / str(n) / "checkpoints" / "last.ckpt", weights_only=True)[RUN_ID_KEY]
        for n in (0, 1)
    }
    assert stamps == {child.info.run_id for child in children}


@pytest.mark.slow
def test_a_second_ctrl_c_in_a_sweep_exits_at_once_and_the_next_command_ends_its_runs(
    tmp_path, store
):
    import sqlite3

    from omegaconf import OmegaConf

    from conftest import write_mnist
    from digitlab.tracking import store as tracking

    data_root = write_mnist(tmp_path / "data", n_train=2000)
    process = sweep_process(
        tmp_path,
        data_root,
        store,
        "model=lenet",
        "trainer.max_epochs=20",
        "data.val_size=100",
        "data.batch_size=50",
        "seed=1,2",
    )
    wait_for(tmp_path / "multirun" / "0" / "checkpoints" / "last.ckpt", process)
    # Both pending at once, so the second arrives while the first is honoured (test_interrupt.py
    # does the same for a single run).
    for sig in (signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGCONT):
        os.killpg(process.pid, sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert "digitlab: interrupted: a second SIGTERM, exiting at once" in err
    assert statuses(store) == ("RUNNING", ["RUNNING"])  # left at once: nothing ended them
    db = store["tracking_uri"].removeprefix("sqlite:///")
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    tracking.open_experiment(OmegaConf.create({**store, "experiment_name": "digitlab"}))
    assert statuses(store) == ("KILLED", ["KILLED"])
