"""``resume=<run id or .ckpt>``: the resumed run's stored recipe, read from its checkpoint or
its store, made the config this command runs (:func:`digitlab.config.resume.resumed_config`).

No torch for a run id: the command line calls this before importing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from digitlab.config.resume import MAX_CONFIG_BYTES, recipe_from_yaml, resumed_config
from digitlab.config.spec import read_run
from digitlab.jobs import quiet_downloads
from digitlab.tracking.store import open_client
from digitlab.training.checkpoints import load_checkpoint, stored_recipe


def stored_config(target: str, tracking_uri: str) -> dict[str, Any] | None:
    """The recipe run ``target`` was trained with, parsed by
    :func:`digitlab.config.spec.read_run` (plain values only, nothing resolved): its
    ``config.yaml`` in the store for a run id, the checkpoint's saved config for a ``.ckpt``
    path; None when there is none (a run or file of an earlier version, or an unknown target,
    which ``resume=`` itself reports)."""
    path = Path(str(target)).expanduser()
    if path.is_file() or path.suffix == ".ckpt":
        if not path.is_file():
            return None
        recipe = stored_recipe(load_checkpoint(path))
        return None if recipe is None else read_run(recipe, f"checkpoint {path}").config()
    # Lazy: mlflow takes 2.5 s to import, which a run id's resume needs and nothing else here.
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri)
    try:
        with quiet_downloads():
            file = Path(client.download_artifacts(str(target), "config.yaml"))
        with file.open(encoding="utf-8", errors="replace") as f:  # never more than the bound
            text = f.read(MAX_CONFIG_BYTES + 1)
    except (MlflowException, OSError):
        return None
    return recipe_from_yaml(text, f"run {target}'s config.yaml").config()


def config_to_resume(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config to run for ``cfg`` composed from ``overrides``: ``cfg`` itself unless it
    resumes a run whose config is stored, else that run's (:func:`resumed_config`)."""
    target = cfg.get("resume")
    if not target:
        return cfg
    stored = stored_config(str(target), cfg.logger.tracking_uri)
    return cfg if stored is None else resumed_config(cfg, stored, overrides, str(target))
