"""A damaged, read-only or full MLflow store: train, serve and predict each answer in one line
(`digitlab: error: ...` naming the file or folder and the fix, exit 1, no trace) and leave the
store file exactly as it was.

The read-only and full stores are real: a tmpfs mounted read-only, and one a few hundred KiB
large that a filler file has filled (the root user, who runs the suite here, writes through
``chmod``, but not through a read-only mount). A user without root gets a ``chmod``-ed folder
for the read-only case; where neither works the test is skipped, saying why. A full disk is
also simulated in-process by making the write that probes for space fail with ENOSPC, which
runs anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import warm
from conftest import fast_run
from digitlab.errors import DigitlabError
from digitlab.tracking import store as tracking

COMMANDS = ("train", "serve", "predict")


def make_store(folder: Path, migrated_db: Path) -> tuple[Path, str]:
    """``folder/mlruns/mlflow.db``, a copy of the migrated store holding one finished run of
    the ``digitlab`` experiment (made without training: its rows are what matter here)."""
    from mlflow.tracking import MlflowClient

    db = folder / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(migrated_db, db)
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment(
        "digitlab", artifact_location=(db.parent / "artifacts").as_uri()
    )
    run = client.create_run(experiment, run_name="stored")
    client.log_metric(run.info.run_id, "val/acc", 0.5)
    client.set_terminated(run.info.run_id)
    return db, run.info.run_id


def command(name: str, db: Path, run_id: str, data_root: Path, out: Path) -> tuple[str, list]:
    """(module, arguments) of digitlab's ``name`` command on the store ``db``."""
    uri = f"sqlite:///{db}"
    if name == "train":
        store = {"tracking_uri": uri, "artifact_location": str(db.parent / "artifacts")}
        return "digitlab", ["model=mlp", *fast_run(data_root, store), f"hydra.run.dir={out}"]
    if name == "serve":
        return "digitlab.cli.serve", ["--tracking-uri", uri, "--port", "0"]
    return "digitlab.cli.predict", [
        "--run",
        run_id,
        "--data",
        "mnist",
        "--root",
        str(data_root),
        "--tracking-uri",
        uri,
        "--out",
        str(out / "p.npy"),
    ]


def run_command(name: str, db: Path, run_id: str, data_root: Path, out: Path):
    module, args = command(name, db, run_id, data_root, out)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return warm.run(module, *args, env=env, cwd=out.parent, timeout=240)


def one_error_line(result) -> str:
    """The command's one `digitlab: error:` line, after checking exit 1 and no trace."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error: ")]
    assert len(errors) == 1, output
    print(errors[0])  # shown by `pytest -rP`: the source of docs/errors.md
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- damaged pages ----------------------------------------------------------------------------


def damage_pages(db: Path) -> None:
    """Overwrite the page header of the ``runs`` table's b-tree, in the middle of the file, as a
    disk or a copy that went wrong does: MLflow's first look at the store (its experiments) still
    works, every read of a run fails with SQLite's "database disk image is malformed"."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'runs'"
        ).fetchone()
    with db.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * 64)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, migrated_db) -> tuple[Path, str, str]:
    db, run_id = make_store(tmp_path_factory.mktemp("damaged"), migrated_db)
    damage_pages(db)
    return db, run_id, digest(db)


def test_the_damage_is_what_sqlite_calls_malformed(damaged):
    db, _, _ = damaged
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT count(*) FROM experiments").fetchone()[0] == 2
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            connection.execute("SELECT name FROM runs").fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_a_damaged_store_is_one_line_and_left_untouched(damaged, name, data_root, tmp_path):
    db, run_id, before = damaged
    line = one_error_line(run_command(name, db, run_id, data_root, tmp_path / "out"))
    assert f"the MLflow store {db} is damaged" in line, line
    assert "database disk image is malformed" in line, line
    assert "restore it from a backup" in line and "tracking_uri" in line, line
    assert f'sqlite3 {db} ".recover"' in line, line
    assert digest(db) == before  # nothing repaired, nothing written
    assert not list(db.parent.glob("mlflow.db-*"))  # no journal left behind either


def test_a_file_that_is_no_database_keeps_its_own_message(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database " * 300)
    with pytest.raises(DigitlabError, match="is not a readable SQLite database"):
        tracking.open_client(f"sqlite:///{db}")
    assert db.read_bytes() == b"not a database " * 300


# --- read-only and full folders ---------------------------------------------------------------


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"mount exited with {done.returncode}")


def _unmount(point: Path) -> None:
    if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)  # busy: detach it


@contextlib.contextmanager
def tmpfs(point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``point``, unmounted on exit; skips where not permitted."""
    point.mkdir(parents=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point))
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}): needs root with CAP_SYS_ADMIN")
    try:
        yield point
    finally:
        _unmount(point)


@contextlib.contextmanager
def read_only_store(folder: Path, source: Path) -> Iterator[Path]:
    """``source`` copied to ``<read-only folder>/mlflow.db``: a tmpfs remounted read-only for
    root, a ``chmod a-w`` folder for anyone else."""
    if os.geteuid() != 0:
        store = folder / "mlruns"
        store.mkdir()
        shutil.copy(source, store / "mlflow.db")
        store.chmod(0o555)
        try:
            yield store / "mlflow.db"
        finally:
            store.chmod(0o755)
        return
    with tmpfs(folder / "mlruns", "4m") as store:
        shutil.copy(source, store / "mlflow.db")
        _mount("-o", "remount,ro", str(store))
        yield store / "mlflow.db"


def fill(folder: Path) -> None:
    """Write to ``folder/filler`` until its file system is full."""
    block = b"\0" * 4096
    with (folder / "filler").open("wb", buffering=0) as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(block)


@contextlib.contextmanager
def full_store(folder: Path, source: Path) -> Iterator[Path]:
    """``source`` copied onto a tmpfs a little larger than it, then filled to the last block."""
    size = source.stat().st_size + 256 * 1024
    with tmpfs(folder / "mlruns", str(size)) as store:
        shutil.copy(source, store / "mlflow.db")
        fill(store)
        assert shutil.disk_usage(store).free < 4096 * 2
        yield store / "mlflow.db"


@pytest.fixture(scope="module")
def source_store(tmp_path_factory, migrated_db) -> tuple[Path, str]:
    return make_store(tmp_path_factory.mktemp("source"), migrated_db)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_a_read_only_store_folder_is_one_line(source_store, name, data_root, tmp_path):
    source, run_id = source_store
    with read_only_store(tmp_path, source) as db:
        before = digest(db)
        line = one_error_line(run_command(name, db, run_id, data_root, tmp_path / "out"))
        assert f"the MLflow store folder {db.parent} is read-only" in line, line
        assert "cannot listen" not in line  # not the port's fault
        assert "make it writable" in line and "tracking_uri" in line, line
        assert digest(db) == before


@pytest.mark.slow
def test_a_full_disk_stops_a_run_before_it_is_created(source_store, data_root, tmp_path):
    """Only what writes is stopped: digitlab-serve still serves from a store on a full disk."""
    source, run_id = source_store
    with full_store(tmp_path, source) as db:
        before = digest(db)
        line = one_error_line(run_command("train", db, run_id, data_root, tmp_path / "out"))
        assert f"no space left for the MLflow store in {db.parent}" in line, line
        assert "No space left on device" in line, line
        assert "free disk space there" in line and "tracking_uri" in line, line
        assert digest(db) == before
        assert not list(db.parent.glob("mlflow.db-*"))


@pytest.mark.parametrize(
    ("code", "told"),
    [
        (errno.ENOSPC, "no space left for the MLflow store in {folder} (No space left on device)"),
        (errno.EDQUOT, "no space left for the MLflow store in {folder} (Disk quota exceeded)"),
        (errno.EROFS, "the MLflow store folder {folder} is read-only (Read-only file system)"),
    ],
)
def test_the_operating_systems_answer_to_a_test_write_is_told(
    code, told, tmp_path, migrated_db, monkeypatch
):
    """Runs anywhere: the test write before an experiment is used fails as the OS would."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(migrated_db, db)
    client = tracking.open_client(f"sqlite:///{db}")

    real = tempfile.TemporaryFile

    def refused(*args, dir=None, **kwargs):  # the test write in the store's folder
        if dir is not None and Path(dir) == db.parent:
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(DigitlabError) as error:
        tracking.get_or_create_experiment(client, "digitlab", str(db.parent / "artifacts"))
    assert str(error.value).startswith(told.format(folder=db.parent)), error.value
    assert client.get_experiment_by_name("digitlab") is None  # stopped before writing


# --- digitlab-serve: what is the store's, a model's file's, or the address's -------------------


class _Model:
    def predict(self, images):
        return images


def _serve(monkeypatch, capsys, store, *args: str, load=None) -> str:
    """digitlab-serve's one error line, run in this process with ``load`` for loading models."""
    from digitlab.cli import serve
    from digitlab.serving.models import ModelCache

    monkeypatch.setattr(ModelCache, "get", load or (lambda self, uri: _Model()))
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--tracking-uri", store["tracking_uri"], "--model", "runs:/0123/model", *args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("digitlab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def test_serve_tells_a_models_unreadable_file_in_one_line(monkeypatch, capsys, store):
    def full(self, uri):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/digitlab-x/best.ckpt")

    line = _serve(monkeypatch, capsys, store, "--port", "0", load=full)
    assert (
        "cannot load runs:/0123/model (No space left on device: /tmp/digitlab-x/best.ckpt)" in line
    ), line
    assert "cannot listen" not in line


def test_serve_blames_the_address_only_for_what_the_address_did(monkeypatch, capsys, store):
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _serve(monkeypatch, capsys, store, "--port", port)
    assert line.endswith(
        f"cannot listen on 127.0.0.1:{port} (Address already in use): pick another --port"
    ), line
    line = _serve(monkeypatch, capsys, store, "--host", "192.0.2.1", "--port", "0")  # TEST-NET
    assert "cannot listen on 192.0.2.1:0 (Cannot assign requested address)" in line, line
    assert line.endswith("pick a --host of this machine (127.0.0.1, or 0.0.0.0 for all)"), line

    from digitlab.serving import server

    def privileged(*args, **kwargs):  # (root, who runs the suite here, may bind port 80)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(server, "make_server", privileged)
    line = _serve(monkeypatch, capsys, store, "--port", "80")
    assert line.endswith(
        "(Permission denied): pick a --port above 1023 (the ones below need "
        "root), or another --host"
    ), line
