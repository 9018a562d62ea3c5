"""The model registry: logger.register_as and digitlab-register, @best on the highest test/acc,
a sweep's parent registering its best child."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import warm
from digitlab.errors import DigitlabError
from digitlab.tracking import registry
from digitlab.training.run import train
from test_sweep import runs_of, sweep


def best_version(client, name: str) -> str:
    """The version whose run has the highest test/acc, computed here from the runs."""
    versions = client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: client.get_run(v.run_id).data.metrics["test/acc"]).version


def test_register_as_points_best_at_the_highest_test_acc(make_cfg, tmp_path):
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
    assert "registered models:/mine/1; models:/mine@best is version 1" in done.stdout
    refused = warm.run(*command, without["run_id"], "--name", "mine")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert (
        refused.stderr.startswith("digitlab: error: ") and "logger.log_model=true" in refused.stderr
    )
    with pytest.raises(DigitlabError, match="no MLflow run"):
        registry.register(MlflowClient(uri), "0" * 32, "mine")


@pytest.mark.slow
def test_a_sweep_registers_its_best_child(tmp_path, data_root, store):
    sweep(
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
