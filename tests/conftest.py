"""Shared test fixtures: tiny data sets in the real file formats and a pre-migrated MLflow store."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from digitlab.config import CONF_DIR, register_resolvers

# The tiny data set lives in the package so that the tutorial notebook can write it too.
from digitlab.data.synthetic import (  # noqa: F401  (tests import them from conftest)
    N_TEST,
    N_TRAIN,
    synthetic_digits,
    write_kaggle,
    write_mnist,
)

# Cache compiled bytecode even where the environment says not to (PYTHONDONTWRITEBYTECODE): the
# suite starts dozens of Python processes that import torch, Lightning and MLflow, and compiling
# them from source costs each process 15-20 s of CPU on a 2-core machine, 5 s with the cache.
# Set before the test modules import torch, so this process writes the cache the first time;
# removed from the environment that the test processes inherit. (.pyc files are git-ignored.)
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

register_resolvers()

# The real data sets: $DIGITLAB_DATA, else the shared folder beside the checkout.
REAL_DATA = Path(
    os.environ.get("DIGITLAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding both a tiny MNIST (gz) and a tiny Kaggle set."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_kaggle(root)
    return root


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, migrated_db) -> dict[str, str]:
    """A fresh copy of the migrated store: {"tracking_uri", "artifact_location"}."""
    folder = tmp_path / "mlruns"
    folder.mkdir()
    shutil.copy(migrated_db, folder / "mlflow.db")
    return {
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "artifact_location": str(folder / "artifacts"),
    }


@pytest.fixture
def make_cfg(data_root, store) -> Callable[..., DictConfig]:
    """Compose the real config with overrides for a fast CPU run on the tiny data and temp store."""

    def make(*overrides: str) -> DictConfig:
        base = [
            f"data.root={data_root}",
            "data.val_size=40",
            "data.batch_size=32",
            "data.eval_batch_size=64",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            f"logger.tracking_uri={store['tracking_uri']}",
            f"logger.artifact_location={store['artifact_location']}",
            "figures.enabled=false",  # seconds per run; test_figures.py turns pictures on
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*base, *overrides])

    return make
