"""The MLflow store: its URI, client, experiments and UI command (no torch here)."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError


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


def default_tracking_uri() -> str:
    """``logger.tracking_uri`` of ``conf/logger/mlflow.yaml``: the store every run writes to."""
    from omegaconf import OmegaConf

    from digitlab.config import CONF_DIR, register_resolvers

    register_resolvers()
    return str(OmegaConf.load(CONF_DIR / "logger" / "mlflow.yaml").tracking_uri)


def ui_command(tracking_uri: str, default_uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on this store, bound to 127.0.0.1.

    ``digitlab-ui`` alone serves the project's store (``default_uri``, by default the logger
    config's); any other store is named with ``--backend-store-uri``. A tracking server is its
    own UI.
    """
    if is_server(tracking_uri):
        return f"open {tracking_uri} in a browser (the server is the UI)"
    if default_uri is None:
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


def open_experiment(logger_cfg) -> tuple[Any, str]:
    """``(client, experiment id)`` for ``logger.tracking_uri`` and ``logger.experiment_name``.

    The one way runs and sweeps reach their experiment: a new one gets its artifact location
    from :func:`artifact_root` (the server's choice for a tracking server), and runs that a
    killed process left RUNNING are marked KILLED (:mod:`digitlab.tracking.owners`).
    """
    from digitlab.tracking.owners import reap_dead_owners

    client = open_client(logger_cfg.tracking_uri)
    experiment_id = get_or_create_experiment(
        client, logger_cfg.experiment_name, artifact_root(logger_cfg)
    )
    reap_dead_owners(client, experiment_id)  # runs a killed process left RUNNING
    return client, experiment_id


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
    _quiet_lock_errors()
    return _first_contact(tracking_uri, db)


def store_locked(error: object) -> bool:
    """Whether ``error`` is SQLite's "database is locked", however MLflow or SQLAlchemy wrap it."""
    return error is not None and "database is locked" in str(error)


class _DropLockErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (store_locked(record.getMessage()) or store_locked(error))


def _quiet_lock_errors() -> None:
    """MLflow logs a SQLite store's "database is locked" with its whole trace before raising
    it; digitlab answers it in one line that names the store and what to do (the busy retries
    here, digitlab.tracking.run for a run), so that log record is dropped. HYDRA_FULL_ERROR=1
    keeps it."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    utils = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropLockErrors) for f in utils.filters):
        utils.addFilter(_DropLockErrors())


def _first_contact(tracking_uri: str, db: Path):
    """An MlflowClient on a SQLite store, made under an exclusive file lock.

    MLflow creates and migrates the tables of a new store when the client is made, unguarded:
    jobs of a parallel sweep starting together on a new store race and fail ("table already
    exists", "expected to match one row"). After that, MLflow's own 20 s SQLite busy timeout
    serialises writers (checked with 8 processes in tests/test_concurrency.py). The store object
    is cached per process, so the lock is taken once.
    """
    # Imported before the lock, not by the client under it: the import takes seconds on a busy
    # machine, and every job of a parallel sweep waited out each other's (16 jobs at once: the
    # last opened the store 90 s after the first, experiments/LOAD.md).
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.tracking import MlflowClient

    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return MlflowClient(tracking_uri)
    started = time.monotonic()
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = _checked_client(tracking_uri, db, started)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _checked_client(tracking_uri: str, db: Path, started: float, patience: float = 20.0):
    """An MlflowClient whose first query went through. MLflow's schema check on connecting waits
    only SQLite's default 5 s for a writer's lock (its own busy timeout, 20 s, applies later), so a
    store busy with parallel jobs is retried for ``patience`` seconds before it counts as locked."""
    from mlflow.tracking import MlflowClient

    while True:
        try:
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
            return client
        except Exception as e:  # SQLAlchemy and MLflow wrap sqlite3's errors in several types
            waited = time.monotonic() - started
            if store_locked(e) and waited < patience:
                continue
            raise _unusable_store(db, e, waited) from None


def _unusable_store(db: Path, error: Exception, waited: float) -> Exception:
    """A one-line DigitlabError for a corrupt or locked SQLite store; other errors unchanged."""
    reason = str(error)
    if store_locked(error):
        return DigitlabError(
            f"the MLflow store {db} stayed locked by another program for {waited:.0f} s: close "
            "what holds it (a program writing to it), then run again"
        )
    if "file is not a database" in reason or "malformed" in reason:
        return DigitlabError(
            f"the MLflow store {db} is not a readable SQLite database (corrupt or another kind "
            "of file): move it aside to start a new store, or set logger.tracking_uri to another"
        )
    return error
