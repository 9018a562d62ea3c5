"""The MLflow side of a run: store, experiment, run name, params and tags (no torch here)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError

# The Hydra groups whose chosen option names the run, in this order.
NAME_GROUPS = ("model", "data", "optimizer", "experiment")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]) if tracking_uri.startswith(prefix) else None


def is_server(tracking_uri: str) -> bool:
    """True for a tracking server (``http(s)://``), which stores artifacts where it decides."""
    return tracking_uri.startswith(("http://", "https://"))


def artifact_root(logger_cfg) -> str | None:
    """``logger.artifact_location`` for a local store; None (the server's choice) for a server."""
    return None if is_server(logger_cfg.tracking_uri) else logger_cfg.artifact_location


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store, bound to 127.0.0.1."""
    if is_server(tracking_uri):
        return f"open {tracking_uri} in a browser (the server is the UI)"
    return f"uv run mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``, created with an absolute artifact location if it is new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if artifact_location:
        location = Path(artifact_location).expanduser().resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:
        # A parallel job may have created it between our look-up and create: use theirs.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_client(tracking_uri: str):
    """An MlflowClient on ``tracking_uri``; a SQLite store's folder is created first."""
    from mlflow.tracking import MlflowClient

    if (db := sqlite_path(tracking_uri)) is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DigitlabError(
                f"cannot create the MLflow store folder {db.parent} ({e.strerror}): "
                "set logger.tracking_uri to a writable place"
            ) from None
    return MlflowClient(tracking_uri)


def run_name(choices: Mapping[str, Any], seed: int) -> str:
    """A readable name from the chosen options, e.g. ``lenet-mnist-sgd-s42``."""
    parts = [str(choices[g]) for g in NAME_GROUPS if choices.get(g)]
    return "-".join([*parts, f"s{seed}"])


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.hidden": "[128, 64]", ...}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(folder: Path) -> str | None:
    """The commit the code runs from (with ``-dirty`` for uncommitted changes), if in git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])
