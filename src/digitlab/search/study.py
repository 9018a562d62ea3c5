"""The stored Optuna study of a search: where it lives, how a sweep opens it, how a job joins it.

Optuna (0.3 s to import) is imported inside the functions that use it, marked lazy: the command
line imports this module before it answers ``--help``, and Hydra imports the sweeper plugin
(which uses it) for every command it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from digitlab.config import project_root
from digitlab.errors import DigitlabError
from digitlab.tracking.store import sqlite_path

# The sweeper hands each job the number of the Optuna trial it evaluates through Hydra's
# hydra.job.env_set: the launcher applies it inside the job's own process (joblib worker,
# submitit job) and removes it afterwards, and it stays out of the job's task overrides.
TRIAL_ENV = "DIGITLAB_OPTUNA_TRIAL"
DASHBOARD_PORT = 8080


def storage_url(storage: str | None, tracking_uri: str) -> str:
    """``hydra.sweeper.storage``, or by default ``sqlite:///<folder>/optuna.db`` beside the MLflow
    SQLite store (``mlruns/`` of the project when MLflow is a server)."""
    if storage:
        return str(storage)
    db = sqlite_path(tracking_uri)
    folder = db.parent if db is not None else project_root() / "mlruns"
    return f"sqlite:///{Path(folder).resolve() / 'optuna.db'}"


def open_storage(url: str):
    """An Optuna RDB storage on ``url`` (tables created on first use)."""
    import optuna  # lazy: 0.3 s, see the top

    engine_kwargs: dict[str, Any] = {}
    if (db := sqlite_path(url)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        # Parallel jobs report to one SQLite file at once: wait on its lock rather than fail.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as e:  # SQLAlchemy's errors: bad URL, missing driver, refused connection
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DigitlabError(
            f"cannot open the Optuna storage {url} ({reason}): set hydra.sweeper.storage to a "
            "reachable SQLAlchemy URL (e.g. sqlite:////abs/path/optuna.db), or null for the default"
        ) from None


def instantiate_optional(node: Any) -> Any:
    """A sampler or pruner from its config node; ``None`` stays None, a built one is kept (Hydra
    builds the sweeper's nested ``_target_`` nodes along with the sweeper)."""
    if node is None or not isinstance(node, Mapping):
        return node
    return instantiate(node)


def dashboard_command(url: str, port: int = DASHBOARD_PORT) -> str:
    """The command that serves optuna-dashboard on this storage, on this machine only."""
    return f"uv run optuna-dashboard --host 127.0.0.1 --port {port} {url}"


def dashboard_link(study_id: int, port: int = DASHBOARD_PORT) -> str:
    """Where optuna-dashboard (started by :func:`dashboard_command`) shows one study."""
    return f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"


def current_trial(sweeper_cfg: Mapping[str, Any] | None, tracking_uri: str):
    """The running Optuna trial this job evaluates, or None outside a digitlab Optuna search.

    ``sweeper_cfg`` is the job's ``hydra.sweeper`` node: it names the storage, the study and
    the pruner, which the job needs to answer ``should_prune()`` the way the study would.
    """
    number = os.environ.get(TRIAL_ENV)
    if not number or not sweeper_cfg:
        return None
    import optuna  # lazy: 0.3 s, see the top

    storage = open_storage(storage_url(sweeper_cfg.get("storage"), tracking_uri))
    name = sweeper_cfg["study_name"]
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        pruner=instantiate_optional(sweeper_cfg.get("pruner")),
    )
    # A trial is known to the storage by its study and number; the Trial object built on its id
    # is the one Study.ask hands an objective, and reports and prunes from any process.
    study_id = storage.get_study_id_from_name(name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
    return optuna.trial.Trial(study, trial_id)


def trial_tags(trial) -> dict[str, str]:
    """MLflow tags that tie a run to its trial and study (the dashboard's names for them)."""
    if trial is None:
        return {}
    return {
        "optuna.study_name": trial.study.study_name,
        "optuna.trial_number": str(trial.number),
    }
