"""Shared test fixtures: tiny data sets in the real file formats and a pre-migrated MLflow store."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from digitlab.config import CONF_DIR, register_resolvers
from digitlab.tracking.ui_server import mlflow_ui_environment
from synthetic import (  # noqa: F401  (tests import them from conftest)
    N_TEST,
    N_TRAIN,
    synthetic_digits,
    write_idx_set,
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

# Each xdist worker gets its share of the cores for torch's threads, as does every process it
# starts (they inherit the variable): by default every process runs a thread per core, so two
# workers and the jobs they start oversubscribe the cores, and torch's OpenMP threads spin
# waiting for each other. On this 2-core machine, one thread each took the suite from 1 475 to
# 1 182 worker-seconds (2026-12-02). Set in the workers only (the controller, which loads this
# file too, runs no test), before anything imports torch; a value the user gave wins.
if "PYTEST_XDIST_WORKER" in os.environ:
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

register_resolvers()

# Test files by how long they keep a worker busy (worker-seconds, measured on the 2-core VM,
# 2026-12-02), longest first. xdist hands whole files to workers in collection order (pyproject:
# --dist loadfile --no-loadscope-reorder), so the long files start first and the short ones fill
# in at the end, instead of one worker finishing a long file alone. Files not listed follow in
# their usual order; the list only orders, so a stale entry costs time, never a test.
LONGEST_FIRST = [
    "test_input_forms.py",
    "test_search.py",
    "test_errors.py",
    "test_load.py",
    "test_interrupt.py",
    "test_tutorial.py",
    "test_distributed.py",
    "test_figures.py",
    "test_cli.py",
    "test_sweep.py",
    "test_draw_page.py",
    "test_presets.py",
    "test_browser.py",
    "test_serve.py",
    "test_tracking_server.py",
    "test_logged_model.py",
    "test_ensemble.py",
    "test_crossval.py",
    "test_registry.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


# The real data sets: $DIGITLAB_DATA, else the shared folder beside the checkout.
REAL_DATA = Path(
    os.environ.get("DIGITLAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
CHROMIUM = Path("/usr/bin/chromium")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose real data, browser or GPU this machine lacks, saying which; in CI
    (DIGITLAB_REQUIRE_REAL_DATA=1, DIGITLAB_REQUIRE_BROWSER=1) a missing one fails the test, so a
    green run cannot hide that it never exercised them."""
    needs = [
        (
            "real_data",
            (REAL_DATA / "MNIST" / "raw").is_dir(),
            "DIGITLAB_REQUIRE_REAL_DATA",
            f"real data not found in {REAL_DATA} (set DIGITLAB_DATA)",
        ),
        (
            "browser",
            CHROMIUM.exists(),
            "DIGITLAB_REQUIRE_BROWSER",
            f"{CHROMIUM} is absent: install Debian's chromium with .ci/browser-deps.sh",
        ),
    ]
    for marker, present, required, reason in needs:
        if item.get_closest_marker(marker) and not present:
            if os.environ.get(required) == "1":
                pytest.fail(f"{reason} ({required}=1)", pytrace=False)
            pytest.skip(reason)
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU on this machine")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding both a tiny MNIST (gz) and a tiny Kaggle set."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_kaggle(root)
    write_idx_sets(root)
    return root


def write_idx_sets(root: Path) -> None:
    """Every other IDX data set of conf/data/ (Fashion-MNIST, EMNIST...), written by its own
    file table: a new data YAML is trained by the tests without a test edit."""
    from digitlab.config import config_groups, register_resolvers
    from digitlab.config.classes import class_names

    register_resolvers()
    for name in config_groups(CONF_DIR)["data"]:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            data = compose("config", overrides=[f"data={name}"]).data
        source = data.source
        if not str(source._target_).endswith(".load_idx") or (root / source.folder).exists():
            continue  # MNIST/raw: write_mnist's digits, which the tests know by label
        classes = data.classes if isinstance(data.classes, int) else list(data.classes)
        files = {part: entry[0] for part, entry in source.files.items()}
        transposed = bool(source.get("transpose"))
        write_idx_set(root / source.folder, files, len(class_names(classes)), transposed)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory, worker_id) -> Path:
    """An empty MLflow SQLite store, migrated once per test run (migrations take seconds): the
    first xdist worker to ask migrates it, under a lock the others wait on, and all copy it."""
    from mlflow.tracking import MlflowClient

    if worker_id == "master":  # no xdist: this session alone
        folder = tmp_path_factory.mktemp("mlflow-template")
    else:  # the workers' temp folders share this run's parent
        folder = tmp_path_factory.getbasetemp().parent
    db = folder / "mlflow-template.db"
    with open(folder / "mlflow-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists():
            building = folder / f"mlflow-template-{worker_id}.db"
            MlflowClient(f"sqlite:///{building}").search_experiments()
            building.rename(db)  # whole, or not there
    return db


def copy_store(folder: Path, migrated_db: Path) -> dict[str, str]:
    """A copy of the migrated store in ``folder/mlruns``: {"tracking_uri", "artifact_location"}."""
    folder = folder / "mlruns"
    folder.mkdir()
    shutil.copy(migrated_db, folder / "mlflow.db")
    return {
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "artifact_location": str(folder / "artifacts"),
    }


@pytest.fixture
def store(tmp_path, migrated_db) -> dict[str, str]:
    """A fresh copy of the migrated store: {"tracking_uri", "artifact_location"}."""
    return copy_store(tmp_path, migrated_db)


# A fast run: one CPU epoch on the tiny data, without the pictures (seconds per run;
# test_figures.py turns them on) or the logged model (about a second; test_logged_model.py turns
# it on). Command-line overrides, which digitlab.compose and digitlab.fit take alike; a later
# override of the same key wins.
FAST_RUN = [
    "data.val_size=40",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "figures.enabled=false",
    "logger.log_model=false",
]


def fast_run(data_root: Path, store: dict[str, str]) -> list[str]:
    """:data:`FAST_RUN` on ``data_root`` into ``store`` (see :func:`copy_store`)."""
    return [
        f"data.root={data_root}",
        *FAST_RUN,
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
    ]


@pytest.fixture
def fast(data_root, store) -> list[str]:
    """The overrides of a fast run on the tiny data into this test's fresh store."""
    return fast_run(data_root, store)


def fast_config(data_root: Path, store: dict[str, str], *overrides: str) -> DictConfig:
    """The real config of a fast run on ``data_root`` into ``store``, then ``overrides``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*fast_run(data_root, store), *overrides])


@pytest.fixture
def make_cfg(data_root, store) -> Callable[..., DictConfig]:
    """Compose the real config of a fast run on the tiny data into this test's store, with
    overrides."""

    def make(*overrides: str) -> DictConfig:
        return fast_config(data_root, store, *overrides)

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server(
    command: Callable[[int], list[str]], log: Path, seconds: float = 300
) -> Iterator[str]:
    """Start ``command(port)`` on a free 127.0.0.1 port and yield its URL once ``/health``
    answers OK; stopped, with its whole process group, on exit.

    Its output goes to ``log`` (never an undrained pipe that could fill and block it). A port
    taken between choosing it and binding it is retried on another.
    """
    # As digitlab-ui runs MLflow's server: no telemetry, no GenAI job runner (its processes only
    # compete for the cores).
    env = mlflow_ui_environment(dict(os.environ))
    for _attempt in range(3):
        port = _free_port()
        with log.open("w") as out:
            server = subprocess.Popen(
                command(port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            if _wait_for_health(url, server, log, seconds):
                yield url
                return
        finally:
            stop_server(server)
    pytest.fail(f"every port tried was taken:\n{log.read_text()[-2000:]}")


def _wait_for_health(url: str, server: subprocess.Popen, log: Path, seconds: float) -> bool:
    """True once ``url``/health says OK and the server's log says it bound that address (an OK
    from another test's server, which took the port first, does not count); False if the port
    was taken; fails otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK" and f"running on {url} " in log.read_text():
                    return True
        except OSError:
            pass
        try:
            server.wait(timeout=0.5)  # doubles as the pause between polls
        except subprocess.TimeoutExpired:
            continue
        if "address already in use" in log.read_text().lower():
            return False
        pytest.fail(f"server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
    pytest.fail(
        f"server did not answer {url}/health in {seconds:.0f} s:\n{log.read_text()[-3000:]}"
    )


def wait_for(path: Path, process) -> None:
    """Poll until ``path`` exists (``process``, a Popen or warm.Started, writes it), failing
    with the process's whole error output if it ends first."""
    while not path.exists():
        if process.poll() is not None:  # the whole of its error, which an assert would shorten
            _, err = process.communicate()
            pytest.fail(f"exited with {process.returncode} before writing {path}:\n{err[-4000:]}")
        time.sleep(0.02)


def stop_server(server: subprocess.Popen) -> None:
    """Stop a server and the workers it forked (its process group)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def checkpoint_accuracy(checkpoint: Path, cfg: DictConfig, split: str = "test") -> float:
    """Accuracy of a checkpoint's network on a split of ``cfg``'s data, computed here without
    Lightning or torchmetrics: what a logged ``<split>/acc`` must equal."""
    import torch

    from digitlab.training.build import build_datamodule
    from digitlab.training.checkpoints import network_from_checkpoint

    net, _ = network_from_checkpoint(checkpoint)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    x, y = datamodule.tensors[split]
    with torch.no_grad():
        return (net(x).argmax(dim=1) == y).float().mean().item()


@pytest.fixture(autouse=True)
def no_default_store_in_the_checkout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Nothing writes MLflow's default store (``sqlite:///mlflow.db`` in the working folder):
    every run, load and registry call names its own store. One such file reached a commit."""
    stray = request.config.rootpath / "mlflow.db"
    existed = stray.exists()
    yield
    if not existed and stray.exists():
        stray.unlink()
        pytest.fail(f"{stray} appeared: something used MLflow's default store", pytrace=False)


@pytest.fixture(autouse=True)
def mlflow_uri_restored() -> Iterator[None]:
    """A test that points MLflow's process-wide URI at its own store (``set_tracking_uri``,
    which sets MLFLOW_TRACKING_URI too) leaves it as it found it: no later test in the worker
    reaches an earlier test's store through it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow  # only where a test moved it: most tests never import MLflow here

        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets it
