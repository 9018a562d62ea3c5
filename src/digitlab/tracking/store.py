"""The MLflow side of a run: store, experiment, run name, params and tags (no torch here)."""

from __future__ import annotations

import os
import shlex
import socket
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


def ui_command(tracking_uri: str, default_uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on this store, bound to 127.0.0.1.

    ``digitlab-ui`` alone serves the project's store (``default_uri``, by default the logger
    config's); any other store is named with ``--backend-store-uri``. A tracking server is its
    own UI.
    """
    if is_server(tracking_uri):
        return f"open {tracking_uri} in a browser (the server is the UI)"
    if default_uri is None:
        from digitlab.cli.ui import default_tracking_uri

        default_uri = default_tracking_uri()
    if tracking_uri == default_uri:
        return "uv run digitlab-ui"
    return f"uv run digitlab-ui --backend-store-uri {tracking_uri}"


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


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, in one line, when an http(s) tracking server does not answer.

    MLflow's own client retries a dead server with back-off for minutes before it gives up.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise DigitlabError(
            f"MLflow tracking server {tracking_uri} is unreachable ({reason}): start it, or set "
            "logger.tracking_uri to a reachable server or a local sqlite:/// store"
        ) from None


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
    if db is None:
        return MlflowClient(tracking_uri)
    return _first_contact(tracking_uri, db)


def _first_contact(tracking_uri: str, db: Path):
    """An MlflowClient on a SQLite store, made under an exclusive file lock.

    MLflow creates and migrates the tables of a new store when the client is made, unguarded:
    jobs of a parallel sweep starting together on a new store race and fail ("table already
    exists", "expected to match one row"). After that, MLflow's own 20 s SQLite busy timeout
    serialises writers (checked with 8 processes in tests/test_concurrency.py). The store object
    is cached per process, so the lock is taken once.
    """
    from mlflow.tracking import MlflowClient

    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return MlflowClient(tracking_uri)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


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
    """Log the flat config; a resumed run keeps the values it has and tags what changed."""
    from mlflow.entities import Param, RunTag

    params = {k: v[:6000] for k, v in params.items()}
    logged = client.get_run(run_id).data.params
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
    if changed:  # MLflow params are write-once; a resume may legitimately raise max_epochs
        note = "; ".join(f"{k}: {logged[k]} -> {v}" for k, v in changed.items())
        client.log_batch(run_id, tags=[RunTag("digitlab.resume_changes", note[:5000])])
    items = [Param(k, v) for k, v in params.items() if k not in logged]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def log_checkpoints(client, run_id: str, *paths: str | Path | None) -> list[str]:
    """Log the checkpoint files that exist under the run's ``checkpoints/``; returns their paths."""
    logged = []
    for path in paths:
        if path and Path(path).is_file():
            client.log_artifact(run_id, str(path), "checkpoints")
            logged.append(str(path))
    return logged


def sweep_tags() -> dict[str, str]:
    """Tags that make a multirun job the child of its sweep's parent run (empty otherwise).

    The parent id comes from ``digitlab.tracking.sweep.PARENT_ENV``, set by the sweep callback; the job's
    overrides are kept so the sweep summary can tabulate what each job changed.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from digitlab.tracking.sweep import PARENT_ENV

    parent = os.environ.get(PARENT_ENV)
    if not parent or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    job = HydraConfig.get().job
    return {
        "mlflow.parentRunId": parent,
        "digitlab.job_num": str(job.num),
        "digitlab.overrides": shlex.join(HydraConfig.get().overrides.task),
    }
