"""The model registry: logger.register_as and digitlab-register, @best on the highest test/acc,
a sweep's parent registering its best child."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import warm
from digitlab.cli.register import main as register_command
from digitlab.errors import DigitlabError
from digitlab.tracking import registry
from digitlab.training.run import train
from test_sweep import runs_of, sweep


def best_version(client, name: str) -> str:
    """The version whose run has the highest test/acc, computed here from the runs."""
    versions = client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: client.get_run(v.run_id).data.metrics["test/acc"]).version


def test_register_as_points_best_at_the_highest_test_acc(make_cfg, tmp_path, capsys):
    good = train(
        make_cfg("model=mlp", "logger.log_model=true", "logger.register_as=digits"),
        output_dir=tmp_path / "good",
    )
    # Registered second, so "@best = newest" would be wrong: a learning rate that learns nothing.
    cfg = make_cfg(
        "model=mlp",
        "logger.log_model=true",
        "logger.register_as=digits",
        "optimizer.lr=1e-9",
        "seed=3",
    )
    bad = train(cfg, output_dir=tmp_path / "bad")
    said = [line for line in capsys.readouterr().out.splitlines() if "registered" in line]
    assert len(said) == 2 and said[1].startswith("digitlab: registered models:/digits/2 (run ")
    assert good["metrics"]["test/acc"] > bad["metrics"]["test/acc"]
    client = MlflowClient(cfg.logger.tracking_uri)
    versions = client.search_model_versions("name = 'digits'")
    assert sorted(v.run_id for v in versions) == sorted([good["run_id"], bad["run_id"]])
    best = client.get_model_version_by_alias("digits", registry.BEST_ALIAS)
    assert best.version == best_version(client, "digits") and best.run_id == good["run_id"]
    assert not best.current_stage or best.current_stage == "None"  # aliases, not stages


@pytest.mark.slow
def test_digitlab_register_command_and_its_errors(make_cfg, tmp_path):
    cfg = make_cfg("model=mlp", "logger.log_model=true")
    with_model = train(cfg, output_dir=tmp_path / "a")
    without = train(make_cfg("model=mlp"), output_dir=tmp_path / "b")
    uri = cfg.logger.tracking_uri
    command = ["digitlab.cli.register", "--tracking-uri", uri]
    done = warm.run(*command, with_model["run_id"], "--name", "mine")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == (
        f"digitlab: registered models:/mine/1 (run {with_model['run_id']}); "
        "models:/mine@best is version 1\n"
    )
    refused = warm.run(*command, without["run_id"], "--name", "mine")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert (
        refused.stderr.startswith("digitlab: error: ") and "logger.log_model=true" in refused.stderr
    )
    with pytest.raises(DigitlabError, match="no MLflow run"):
        registry.register(MlflowClient(uri), "0" * 32, "mine")


@pytest.mark.slow
def test_a_sweep_registers_its_best_child(tmp_path, data_root, store):
    done = sweep(
        tmp_path,
        data_root,
        store,
        "model=mlp",
        "optimizer.lr=1e-9,0.1",
        "logger.log_model=true",
        "logger.register_as=swept",
    )
    client, parent, children = runs_of(store)
    (version,) = client.search_model_versions("name = 'swept'")  # the parent's pick, not every job
    assert version.run_id == parent.data.tags["digitlab.best_run_id"]
    best_child = max(children, key=lambda c: c.data.metrics["val/acc"])
    assert version.run_id == best_child.info.run_id
    assert client.get_model_version_by_alias("swept", "best").version == version.version
    # the sweep's closing lines say what it registered, in place of the command that would
    registered = (
        f"  registered models:/swept/1 (run {best_child.info.run_id}); "
        "models:/swept@best is version 1"
    )
    assert registered in done.stdout.splitlines()
    assert "digitlab-register" not in done.stdout


def register_line(capsys, uri: str, run_id: str, name: str = "mine") -> str:
    """``digitlab-register RUN_ID --name NAME`` in this process: its one line on stdout."""
    capsys.readouterr()  # what training printed
    register_command([run_id, "--name", name, "--tracking-uri", uri])
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1, (out, err)
    return out.strip()


def test_a_run_without_test_acc_is_registered_and_best_says_why_it_did_not_move(
    make_cfg, tmp_path, capsys
):
    cfg = make_cfg("model=mlp", "logger.log_model=true", "test_after_fit=false")
    untested = train(cfg, output_dir=tmp_path / "untested")["run_id"]
    tested = train(make_cfg("model=mlp", "logger.log_model=true"), output_dir=tmp_path / "tested")
    uri, client = cfg.logger.tracking_uri, MlflowClient(cfg.logger.tracking_uri)

    assert register_line(capsys, uri, untested) == (
        f"digitlab: registered models:/mine/1 (run {untested}); models:/mine@best is not set: "
        f"run {untested} has no test/acc to rank it by (trained with test_after_fit=false)"
    )
    assert not client.get_registered_model("mine").aliases
    assert register_line(capsys, uri, tested["run_id"]) == (
        f"digitlab: registered models:/mine/2 (run {tested['run_id']}); "
        "models:/mine@best is version 2"
    )
    other = train(cfg, output_dir=tmp_path / "untested2")["run_id"]
    assert register_line(capsys, uri, other) == (
        f"digitlab: registered models:/mine/3 (run {other}); models:/mine@best stays version 2: "
        f"run {other} has no test/acc to rank it by (trained with test_after_fit=false)"
    )
    assert str(client.get_model_version_by_alias("mine", registry.BEST_ALIAS).version) == "2"


def test_registering_a_run_again_answers_with_its_version_and_makes_none(
    make_cfg, tmp_path, capsys
):
    cfg = make_cfg("model=mlp", "logger.log_model=true", "logger.register_as=mine")
    run_id = train(cfg, output_dir=tmp_path / "a")["run_id"]  # registered as version 1
    uri, client = cfg.logger.tracking_uri, MlflowClient(cfg.logger.tracking_uri)
    again = (
        f"digitlab: run {run_id}'s model is already models:/mine/1, no new version made; "
        "models:/mine@best is version 1"
    )
    assert register_line(capsys, uri, run_id) == again
    assert register_line(capsys, uri, run_id) == again
    assert [str(v.version) for v in client.search_model_versions("name = 'mine'")] == ["1"]
    # under another name it is a first registration
    assert register_line(capsys, uri, run_id, "other").startswith("digitlab: registered ")
