"""The MLflow store: its URI, client, experiments and UI command (no torch here). Every command
imports this before ``--help``: MLflow (2.0 s to import) is imported where a store opens (lazy)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock
from omegaconf import OmegaConf

from digitlab.config import CONF_DIR, register_resolvers
from digitlab.errors import DigitlabError
from digitlab.tracking.owners import reap_dead_owners
from digitlab.tracking.uris import is_server, sqlite_path


def default_tracking_uri() -> str:
    register_resolvers()
    return str(OmegaConf.load(CONF_DIR / "logger" / "mlflow.yaml").tracking_uri)


def ui_command(tracking_uri: str, default_uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on this store (a server is its own UI)."""
    if is_server(tracking_uri):
        return f"open {tracking_uri} in a browser (the server is the UI)"
    if default_uri is None:
        default_uri = default_tracking_uri()
    if tracking_uri == default_uri:
        return "uv run digitlab-ui"
    return f"uv run digitlab-ui --backend-store-uri {tracking_uri}"


# MLflow 3's tag for an experiment's kind (GenAI apps, or training models as digitlab's are): its
# API and tools read it, and the page asks no "experiment type" question of a tagged experiment.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name`` (restored, or created with an absolute artifact location), of
    the training kind. Every run's experiment comes from here, so an unwritable store is told
    here in one line, before SQLite would fail half-way through creating the run."""
    check_writable(client.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if KIND_TAG not in experiment.tags:  # an earlier digitlab's; a kind set in the UI stays
            from mlflow.exceptions import MlflowException  # lazy: MLflow, see the top

            # parallel jobs may all try: one write wins, and the tag is worth no failed job
            with contextlib.suppress(MlflowException):
                client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id
    location = None
    if artifact_location:
        location = Path(artifact_location).expanduser().resolve().as_uri()
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={KIND_TAG: TRAINING_KIND}
        )
    except Exception:
        # A parallel job may have created it between our look-up and create: use theirs.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_experiment(logger_cfg) -> tuple[Any, str]:
    """``(client, experiment id)`` of ``logger``: how runs and sweeps reach their experiment."""
    client = open_client(logger_cfg.tracking_uri)
    # a tracking server decides where artifacts go
    location = None if is_server(logger_cfg.tracking_uri) else logger_cfg.artifact_location
    experiment_id = get_or_create_experiment(client, logger_cfg.experiment_name, location)
    reap_dead_owners(client, experiment_id)  # runs a killed process left RUNNING
    return client, experiment_id


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, in one line, when an http(s) tracking server does not answer (MLflow's
    client retries a dead server for minutes)."""
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
    from mlflow.tracking import MlflowClient  # lazy: MLflow costs 2 s, see the top

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
    if not db.exists():  # MLflow creates its tables next: on a full disk it would stop half-way
        check_writable(tracking_uri)
    # MLflow logs "database is locked" with its whole trace: digitlab says it in one line (the
    # retries of _first_contact, tracking.run for a run). HYDRA_FULL_ERROR=1 keeps it.
    utils = logging.getLogger("mlflow.store.db.utils")
    if os.environ.get("HYDRA_FULL_ERROR") != "1" and not any(
        isinstance(f, _DropLockErrors) for f in utils.filters
    ):
        utils.addFilter(_DropLockErrors())
    return _first_contact(tracking_uri, db)


# The other fix for a store that cannot be used: another one.
ANOTHER_STORE = "point logger.tracking_uri (or --tracking-uri) at"
# What a test write must get through for a store to take a run: SQLite's journal copies the
# pages a transaction changes, the store grows, and the run's checkpoints usually land beside it.
PROBE_BYTES = 1 << 20


def check_writable(tracking_uri: str) -> None:
    """A one-line DigitlabError where a SQLite store's folder or file cannot be written (a
    read-only folder, a full disk, a quota): the operating system's answer to a test write."""
    if (db := sqlite_path(tracking_uri)) is None:
        return
    try:
        with tempfile.TemporaryFile(dir=db.parent) as probe:  # unnamed, gone when closed
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
    except OSError as e:
        raise _unwritable(db.parent, e) from None
    if db.exists() and not os.access(db, os.W_OK):  # (for root it says yes, and root may)
        raise DigitlabError(
            f"the MLflow store {db} is read-only: make it writable (chmod u+w {db}), or "
            f"{ANOTHER_STORE} another store"
        )


def _unwritable(folder: Path, error: OSError) -> DigitlabError:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DigitlabError(
            f"no space left for the MLflow store in {folder} ({reason}): free disk space there, "
            f"or {ANOTHER_STORE} a store on another disk"
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return DigitlabError(
            f"the MLflow store folder {folder} is read-only ({reason}): make it writable "
            f"(chmod u+w, or mount it read-write), or {ANOTHER_STORE} a store in a writable folder"
        )
    return DigitlabError(
        f"cannot write in the MLflow store folder {folder} ({reason}): check that folder, or "
        f"{ANOTHER_STORE} another store"
    )


# Stores whose every page this process has read whole: checked once, however often opened.
_whole_stores: set[Path] = set()


def _check_pages(db: Path, busy_s: float = 1.0) -> None:
    """A one-line DigitlabError for a store with damaged pages, before anything uses it: MLflow
    reads only its experiments first, and a damaged run's page would surface later as a chain
    of traces. SQLite's quick_check reads every page (about 1 ms per MB), read-only; a store busy
    past ``busy_s`` is left to MLflow's own connection and checked next time."""
    if db in _whole_stores or not db.is_file():
        return
    try:
        uri = f"{db.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=busy_s)) as connection:
            found = [row[0] for row in connection.execute("PRAGMA quick_check(1)")]
    except sqlite3.DatabaseError as e:
        if "file is not a database" in str(e) or "malformed" in str(e):
            raise _unusable_store(db, e, 0.0) from None
        return
    if found != ["ok"]:  # its first finding, on one line ("*** in database main ***" dropped)
        finding = " ".join(line for line in found[0].splitlines() if not line.startswith("***"))
        raise _damaged_store(db, f"database disk image is malformed: {finding}")
    _whole_stores.add(db)


def _damaged_store(db: Path, reason: str) -> DigitlabError:
    return DigitlabError(
        f"the MLflow store {db} is damaged ({reason}): restore it from a backup, or "
        f'{ANOTHER_STORE} another store; sqlite3 {db} ".recover" | sqlite3 recovered.db may '
        "rescue its runs into a new file (this one is left as it is)"
    )


def store_locked(error: object) -> bool:
    return error is not None and "database is locked" in str(error)


class _DropLockErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (store_locked(record.getMessage()) or store_locked(error))


def _first_contact(tracking_uri: str, db: Path):
    """An MlflowClient on a SQLite store, made under an exclusive file lock: MLflow creates and
    migrates a new store's tables unguarded, and parallel jobs would race ("table already
    exists"). Then MLflow's 20 s busy timeout serialises writers (tests/test_concurrency.py)."""
    # Imported before the lock: under it every job of a parallel sweep waited out each other's
    # import (experiments/LOAD.md). Lazy: see the top.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    _check_pages(db)  # within the lock's patience: a busy store waits here at most a second
    # filelock's lock never follows a link planted at the lock's path, nor truncates a file.
    path = db.with_name(db.name + ".lock")
    lock = FileLock(path)
    try:
        lock.acquire()
    except OSError as e:  # the store's folder is what failed: read-only, or out of inodes
        if e.errno == errno.ELOOP:
            raise DigitlabError(
                f"{path} is a symbolic link, which digitlab never makes (someone placed it): "
                "remove it, or point logger.tracking_uri (or --tracking-uri) at another store"
            ) from None
        raise _unwritable(db.parent, e) from None
    try:
        while True:  # until a first query goes through: MLflow's schema check waits only
            try:  # SQLite's default 5 s for a writer's lock, so a busy store is retried for 20 s
                client = MlflowClient(tracking_uri)
                client.search_experiments(max_results=1)
                return client
            except Exception as e:  # SQLAlchemy and MLflow wrap sqlite3's errors in several types
                waited = time.monotonic() - started
                if not store_locked(e) or waited >= 20.0:
                    raise _unusable_store(db, e, waited) from None
    finally:
        lock.release()


def _unusable_store(db: Path, error: Exception, waited: float) -> Exception:
    """A one-line DigitlabError for a corrupt, damaged, locked, read-only or full SQLite store."""
    reason = str(error)
    if store_locked(error):
        return DigitlabError(
            f"the MLflow store {db} stayed locked by another program for {waited:.0f} s: close "
            "what holds it (a program writing to it), then run again"
        )
    if "file is not a database" in reason:
        return DigitlabError(
            f"the MLflow store {db} is not a readable SQLite database (corrupt or another kind "
            "of file): move it aside to start a new store, or set logger.tracking_uri to another"
        )
    if "malformed" in reason:
        return _damaged_store(db, "database disk image is malformed")
    # SQLite's own words where the folder check could not see it coming (a store to migrate).
    if "database or disk is full" in reason:
        return _unwritable(db.parent, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    if "readonly database" in reason:
        return _unwritable(db.parent, OSError(errno.EROFS, "attempt to write a readonly database"))
    return error
