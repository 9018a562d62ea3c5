"""Shared tracking: a real `mlflow server` (SQLite, served artifacts) receives a whole run:
params, metrics, config, figures and checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import http_server
from digitlab.training.run import train


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, migrated_db) -> tuple[str, Path]:
    """``http://127.0.0.1:<port>`` of a tracking server, and the folder it keeps artifacts in.
    Shared by this file's tests (each writes its own experiment): a server takes a new
    interpreter's imports, 20 s of CPU on a 2-core machine, to start."""
    folder = tmp_path_factory.mktemp("server")
    db = folder / "server.db"
    shutil.copy(migrated_db, db)  # skips the server's own (slow) migration of an empty database

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "served"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]

    with http_server(command, folder / "server.log") as url:
        yield url, folder / "served"


@pytest.mark.slow
def test_a_run_arrives_whole_at_a_tracking_server(make_cfg, mlflow_server, tmp_path):
    mlflow_server, served = mlflow_server
    cfg = make_cfg(
        "model=mlp",
        "figures.enabled=true",
        "trainer.limit_train_batches=3",
        "logger.experiment_name=shared",
        f"logger.tracking_uri={mlflow_server}",
    )
    result = train(cfg, output_dir=tmp_path / "job", choices={"model": "mlp", "data": "mnist"})

    # What the server itself answers over its REST API.
    address = f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={result['run_id']}"
    with urllib.request.urlopen(address, timeout=30) as response:
        run = json.loads(response.read())["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model._target_"] == "digitlab.models.MLP"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["test/acc"] == pytest.approx(result["metrics"]["test/acc"])
    assert {"train/loss", "val/acc", "test/loss"} <= set(metrics)

    client = MlflowClient(mlflow_server)
    # The server chose where artifacts go: logger.artifact_location is ignored for a server.
    experiment = client.get_experiment_by_name("shared")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"config.yaml", "checkpoints", "figures"} <= artifacts
    figures = [a.path for a in client.list_artifacts(result["run_id"], "figures/predictions")]
    assert "figures/predictions/confusion_matrix.png" in figures
    assert not Path(cfg.logger.artifact_location).exists()

    # The checkpoint went through the server into its artifact store, and loads back.
    downloaded = client.download_artifacts(result["run_id"], "checkpoints/best.ckpt", str(tmp_path))
    checkpoint = torch.load(downloaded, weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["config"]["model"]["_target_"] == "digitlab.models.MLP"
    run_folder = [p for p in served.rglob(result["run_id"]) if p.is_dir()]
    assert run_folder and list(run_folder[0].rglob("best.ckpt"))
    assert "config.yaml" in {p.name for p in run_folder[0].rglob("*")}


@pytest.mark.slow
def test_a_sweep_lets_the_server_choose_where_artifacts_go(mlflow_server, tmp_path):
    """The sweep's parent run creates its experiment as a run does: against a server, the
    server's own artifact store, never the local logger.artifact_location."""
    from hydra import compose, initialize_config_dir

    from digitlab.config import CONF_DIR
    from digitlab.tracking.sweep import PARENT_ENV, MlflowSweep

    mlflow_server, _ = mlflow_server
    overrides = [
        f"logger.tracking_uri={mlflow_server}",
        "logger.experiment_name=swept",
        f"logger.artifact_location={tmp_path / 'local'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    sweep = MlflowSweep()
    sweep.on_multirun_start(cfg)
    client = MlflowClient(mlflow_server)
    try:
        experiment = client.get_experiment_by_name("swept")
        location = experiment.artifact_location
        assert location.startswith("mlflow-artifacts:"), location
        # Of the training kind, through the server's REST API too (MLflow's tag for it).
        assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
        assert client.get_run(sweep.parent_id).info.experiment_id == experiment.experiment_id
    finally:
        client.set_terminated(sweep.parent_id, "FINISHED")
        sweep.parent_id = None  # ended here: nothing left for its exit hook
        os.environ.pop(PARENT_ENV, None)
