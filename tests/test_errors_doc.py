"""docs/errors.md's message tables, row by row: each row is one case of
``test_a_row_of_the_page_is_what_its_case_answers``, which runs the row's input (``CASES``) and
checks that what the code answered is what the row says.

A message in the page reads as a pattern: ``…`` stands for any text, a placeholder such as
``<id>`` or ``<port>`` for one word (``<reason>`` for any text), the rest is literal. A row's
messages are the code spans of its message column that hold ": " or are a parenthesised
fragment (or all of its spans where none does); each must match a whole line its case answered
(with or without ``digitlab: error: ``), and every exit or HTTP status the case saw must be one
the row (or its section) gives. A row whose column starts "not an error" must answer without an
error. A row without a case fails, and so does a case without a row.

A bad command line (``cli``) must also answer in exactly one line, without a trace, and leave
no MLflow run and no checkpoint behind.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import errno
import functools
import gzip
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest

import digitlab
import warm
from conftest import FAST_RUN, copy_store, write_kaggle, write_mnist

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ERROR = "digitlab: error: "
RAW = "MNIST/raw"
CSV = "digit-recognizer/train.csv"
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"

# --- the page --------------------------------------------------------------------------------

# Per section with message tables: the column of the messages, the column of the exit or HTTP
# status (None: the section gives it once), and that one status (None: no status to check).
COLUMNS = {
    "Bad input": ("Message", None, 1),
    "Requests to `digitlab-serve`": ("Message", "Status", None),
    "From Python": ("Message", None, None),
    "During training": ("What happens", "Exit", None),
}
# Sections whose tables describe behaviour, not messages (tests/test_interrupt.py compares a
# resumed run's weights, metrics and pictures with an uninterrupted run's).
BEHAVIOUR = {"Resuming"}


class Row(NamedTuple):
    key: str  # "section: Case cell", with the second cell where two rows share the first
    message: str
    statuses: set[int] | None  # the exit or HTTP statuses the row allows; None: not stated
    line: int  # in docs/errors.md


def cells(line: str) -> list[str]:
    """A table line's cells; a | inside a code span does not split."""
    found, cell, code = [], "", False
    for char in line.strip().strip("|"):
        code ^= char == "`"
        if char == "|" and not code:
            found.append(cell.strip())
            cell = ""
        else:
            cell += char
    return [*found, cell.strip()]


def tables(text: str) -> list[tuple[str, list[str], list[tuple[int, list[str]]]]]:
    """(section, header cells, [(line number, cells)]) of each table of the page."""
    found, section, in_table = [], "", False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            in_table = False
        elif not in_table:  # its header
            found.append((section, cells(line), []))
            in_table = True
        elif not set(line) <= set("|-: "):  # a row, not the line under the header
            found[-1][2].append((number, cells(line)))
    return found


def doc_rows() -> list[Row]:
    rows = []
    for section, header, lines in tables(DOC.read_text()):
        if section not in COLUMNS:
            continue
        message_column, status_column, status = COLUMNS[section]
        first = [row[0] for _, row in lines]

        def column(row: list[str], name: str, header=header) -> str:
            return next(c for h, c in zip(header, row, strict=True) if h.startswith(name))

        for number, row in lines:
            case = f"{row[0]} ({row[1]})" if first.count(row[0]) > 1 else row[0]
            message = column(row, message_column)
            if status_column:
                stated = SPAN.sub("", column(row, status_column))
                allowed = {int(n) for n in re.findall(r"\d+", stated)}
            else:
                allowed = (
                    None
                    if status is None
                    else {0 if message.startswith("not an error") else status}
                )
            rows.append(Row(f"{section}: {case}", message, allowed, number))
    return rows


SPAN = re.compile(r"`([^`]+)`")
PLACEHOLDER = re.compile(r"(…|<[a-z][a-z0-9 ]*>)")


def pattern(span: str) -> re.Pattern:
    """The page's message ``span`` as a regular expression (see the module's docstring)."""
    parts = []
    for part in PLACEHOLDER.split(span):
        if part == "…" or part == "<reason>":
            parts.append(".*")
        elif PLACEHOLDER.fullmatch(part):  # (or itself: a message may say "resume=<run id>")
            parts.append(rf"(?:\S+|{re.escape(part)})")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts))


def messages(cell: str) -> list[str]:
    """The messages a message cell states (see the module's docstring)."""
    spans = SPAN.findall(cell)
    stated = [s for s in spans if ": " in s or s.startswith("(") and s.endswith(")")]
    return stated if stated or cell.startswith("not an error") else spans


def says(span: str, line: str) -> bool:
    """Whether ``line`` (an answer) is the message ``span`` of the page."""
    regex, fragment = pattern(span), span.startswith("(")
    return any(
        regex.search(text) if fragment else regex.fullmatch(text)
        for text in (line, line.removeprefix(ERROR))
    )


# --- the answers -----------------------------------------------------------------------------


class Said(NamedTuple):
    """One answer: a line printed (or an exception's or HTTP answer's message) and its exit or
    HTTP status, where there is one."""

    line: str
    status: int | None = None


class Ctx(NamedTuple):
    """What a case gets: its own folder, and the session's migrated store and tiny data."""

    tmp: Path
    migrated_db: Path
    data_root: Path

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path

    def store(self, name: str = "store") -> str:
        """The tracking URI of a new copy of the migrated store."""
        return copy_store(self.folder(name), self.migrated_db)["tracking_uri"]


Case = Callable[[Ctx], list[Said]]


def answers(result, prefixes: tuple[str, ...] = (ERROR,), renamed: dict | None = None):
    """A command's lines that start with one of ``prefixes``, with its exit status; ids and
    folders renamed as the page names them. Without such a line, its last line, so that a
    failure shows what it said instead."""
    lines = (result.stdout + result.stderr).splitlines()
    found = [line for line in lines if line.startswith(prefixes)]
    if not found:
        found = [f"(no line starting {prefixes}; it ended with) {lines[-1] if lines else ''}"]
    for real, shown in (renamed or {}).items():
        found = [line.replace(real, shown) for line in found]
    return [Said(line, result.returncode) for line in found]


def raised(call: Callable[[], object]) -> Said:
    """The message of the DigitlabError ``call`` raises."""
    from digitlab.errors import DigitlabError

    with pytest.raises(DigitlabError) as error:
        call()
    return Said(str(error.value))


def command(module: str, *args: str, cwd=None, env=None, prefixes=(ERROR,), renamed=None):
    """``python -m module args``, forked warm (tests/warm.py): its lines starting ``prefixes``."""
    env = {**os.environ, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    result = warm.run(module, *args, env=env, cwd=cwd, timeout=280)
    return answers(result, prefixes, renamed)


def cli_args(overrides: list[str], data_root: Path, db: Path, out: Path) -> tuple[list, dict]:
    """The arguments and environment of ``digitlab`` on ``data_root`` ($DIGITLAB_DATA) into the
    store ``db``, its job folder ``out``."""
    store = {"tracking_uri": f"sqlite:///{db}", "artifact_location": str(db.parent / "artifacts")}
    fast = [*FAST_RUN, *(f"logger.{key}={value}" for key, value in store.items())]
    base = [*fast, f"hydra.run.dir={out}", f"hydra.sweep.dir={out}"]
    flags = [o for o in overrides if o.startswith("-")]  # first: Hydra takes no flag after a word
    env = {**os.environ, "DIGITLAB_DATA": str(data_root)}
    env.pop("HYDRA_FULL_ERROR", None)
    return [*flags, *base, *(o for o in overrides if o not in flags)], env


def no_run_in(db: Path) -> bool:
    if not db.read_bytes().startswith(b"SQLite format 3"):
        return True  # not a database (the corrupt-store case): nothing recorded
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


def cli(*overrides: str, damage=None, env=None) -> Case:
    """``digitlab overrides`` on the tiny data (a fresh copy given to ``damage(root)`` first)
    into a fresh store (the data root's sibling ``mlruns/``). In an override, ``{port}`` is a
    port nothing listens on and ``{tmp}`` the case's folder."""

    def run(ctx: Ctx) -> list[Said]:
        db = Path(copy_store(ctx.tmp, ctx.migrated_db)["tracking_uri"].removeprefix("sqlite:///"))
        root = ctx.data_root
        if damage:
            root = write_kaggle(write_mnist(ctx.tmp / "data"))
            damage(root)
        with socket.socket() as closed:  # bound, not listening: a connection is refused
            closed.bind(("127.0.0.1", 0))
            fills = {"port": closed.getsockname()[1], "tmp": ctx.tmp}
            args, environment = cli_args(
                [o.format(**fills) for o in overrides], root, db, ctx.tmp / "out"
            )
            result = warm.run("digitlab", *args, env={**environment, **(env or {})}, timeout=280)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output[-3000:]
        assert sum(line.startswith(ERROR) for line in result.stderr.splitlines()) == 1, output
        # Nothing half-done: no run in the store, no training started (no checkpoint).
        assert no_run_in(db) and not (ctx.tmp / "out" / "checkpoints").exists(), output
        return answers(result)

    return run


def each(*cases: Case) -> Case:
    """A row stating several messages, each answered by its own case (in a folder of its own)."""

    def run(ctx: Ctx) -> list[Said]:
        folders = (ctx.folder(str(number)) for number in range(len(cases)))
        return [
            said
            for case, folder in zip(cases, folders, strict=True)
            for said in case(Ctx(folder, ctx.migrated_db, ctx.data_root))
        ]

    return run


# --- data files ------------------------------------------------------------------------------


def idx_gz(array: np.ndarray) -> bytes:
    """``array`` (uint8) as a gzipped IDX file."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.tobytes())


def edit_csv_line(number: int, edit: Callable[[list[str]], list[str]]):
    """A damage: ``edit(cells)`` applied to line ``number`` (from 1) of the tiny train.csv."""

    def damage(root: Path) -> None:
        lines = (root / CSV).read_bytes().decode().split("\r\n")
        lines[number - 1] = ",".join(edit(lines[number - 1].split(",")))
        (root / CSV).write_bytes("\r\n".join(lines).encode())

    return damage


def train_csv(ctx: Ctx, name: str, edit: Callable[[bytes], bytes] = lambda b: b) -> Path:
    """A copy of the tiny Kaggle train.csv (CRLF line ends, as Kaggle's), its bytes edited."""
    path = write_kaggle(ctx.folder(name)) / CSV
    path.write_bytes(edit(path.read_bytes()))
    return path


def read_csv(path: Path) -> Said:
    from digitlab.data.kaggle import read_kaggle_csv

    return raised(lambda: read_kaggle_csv(path))


@contextlib.contextmanager
def refused_open(path: Path):
    """Opening ``path`` fails as for a file its reader may not read (as chmod 000 does, except
    for root, who runs some of these tests)."""
    real = Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", refuse)
        yield


def download_fails(ctx: Ctx) -> list[Said]:
    """One mirror serves files of the wrong checksum, the other refuses connections."""
    from torchvision.datasets import MNIST

    from digitlab.data.sources import load_mnist

    served = ctx.folder("mirror")
    for name, _ in MNIST.resources:
        (served / name).write_bytes(b"not the file")
    handler = functools.partial(Quiet, directory=str(served))
    with (
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as mirror,
        socket.socket() as closed,
    ):
        closed.bind(("127.0.0.1", 0))
        threading.Thread(target=mirror.serve_forever, daemon=True).start()
        try:
            urls = [f"http://127.0.0.1:{s.getsockname()[1]}/" for s in (mirror.socket, closed)]
            return [raised(lambda: load_mnist(ctx.folder("root"), download=True, mirrors=urls))]
        finally:
            mirror.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def idx_header_too_large(ctx: Ctx) -> list[Said]:
    from digitlab.data.idx import read_images

    folder = ctx.folder("idx")
    header = bytes([0, 0, 8, 3]) + np.array([2**31] * 3, ">u4").tobytes()
    two = bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">u4").tobytes() + bytes(2 * 784)
    files = {
        "train-images-idx3-ubyte": header + bytes(100),
        "train-images-idx3-ubyte.gz": gzip.compress(header),
        "t10k-images-idx3-ubyte.gz": gzip.compress(two + bytes(100)),  # longer than it says
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [raised(lambda name=name: read_images(folder / name)) for name in files]


def idx_unreadable(ctx: Ctx) -> list[Said]:
    from digitlab.data.idx import read_images

    path = ctx.folder("idx") / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(16)))
    with refused_open(path):
        unreadable = raised(lambda: read_images(path))
    folder = ctx.folder("folder") / "train-images-idx3-ubyte.gz"
    folder.mkdir()
    return [unreadable, raised(lambda: read_images(folder))]


def kaggle_not_utf8(ctx: Ctx) -> list[Said]:
    latin = train_csv(ctx, "latin", lambda b: b.replace(b"\r\n", b"\r\n\xe9", 1))
    wide = train_csv(ctx, "wide", lambda b: codecs.BOM_UTF16_LE + b.decode().encode("utf-16-le"))
    return [read_csv(latin), read_csv(wide)]


def kaggle_unreadable(ctx: Ctx) -> list[Said]:
    path = train_csv(ctx, "unreadable")
    with refused_open(path):
        unreadable = read_csv(path)
    folder = ctx.folder("folder") / "train.csv"
    folder.mkdir()
    return [unreadable, read_csv(folder)]


def kaggle_one_row(ctx: Ctx) -> list[Said]:
    from digitlab.data.sources import load_kaggle

    path = train_csv(ctx, "one", lambda b: b"\r\n".join(b.split(b"\r\n")[:2]) + b"\r\n")
    return [raised(lambda: load_kaggle(path.parent.parent))]


def kaggle_lf_and_bom(ctx: Ctx) -> list[Said]:
    """Not an error: LF line ends and a UTF-8 byte-order mark read as Kaggle's own file does."""
    from digitlab.data.kaggle import read_kaggle_csv

    images, labels = read_kaggle_csv(train_csv(ctx, "kaggle"))
    for edit in (lambda b: b.replace(b"\r\n", b"\n"), lambda b: codecs.BOM_UTF8 + b):
        other_images, other_labels = read_kaggle_csv(train_csv(ctx, "other", edit))
        assert (other_images == images).all() and (other_labels == labels).all()
    return []


# --- checkpoints, digitlab-predict, -register and -serve -------------------------------------


def checkpoint(path: Path, *overrides: str, edit=lambda config: None) -> Path:
    """A checkpoint as digitlab writes one (an untrained MLP and its run config, which
    ``edit`` may change), without training."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = digitlab.compose("model=mlp", "data.val_size=40", *overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    edit(config)
    weights = instantiate(cfg.model).state_dict()
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in weights.items()},
            "hyper_parameters": {"config": config},
        },
        path,
    )
    return path


def resume_checkpoints(root: Path) -> None:
    """A damage: beside the data, an MLP's weights (mlp.ckpt), their first KB (corrupt.ckpt),
    and the weights with a pickled object (foreign.ckpt)."""
    import argparse

    import torch

    from digitlab.models import MLP

    net = MLP(hidden=[128, 64], activation="relu", input_size=28)
    weights = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": weights}, root / "mlp.ckpt")
    (root / "corrupt.ckpt").write_bytes((root / "mlp.ckpt").read_bytes()[:1000])
    foreign = {"state_dict": weights, "hyper_parameters": argparse.Namespace(lr=0.1)}
    torch.save(foreign, root / "foreign.ckpt")


def predict_crafted(edit: Callable[[dict], None]) -> Case:
    """digitlab-predict on a checkpoint whose saved config ``edit`` changed."""

    def run(ctx: Ctx) -> list[Said]:
        folder = ctx.folder("crafted")
        checkpoint(folder / "crafted.ckpt", edit=edit)
        mnist = ["--data", "mnist", "--root", str(ctx.data_root)]
        return command("digitlab.cli.predict", "--checkpoint", "crafted.ckpt", *mnist, cwd=folder)

    return run


def new_run(client, experiment: str, name: str, status="FINISHED", checkpoint=None, **tags):
    """A run made directly in the store (no training), with ``checkpoint`` logged as its
    ``checkpoints/best.ckpt``."""
    run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    if checkpoint is not None:
        client.log_artifact(run_id, str(checkpoint), "checkpoints")
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def store_with(ctx: Ctx) -> tuple[str, object, str]:
    """(tracking URI, client, experiment id) of a new store with the experiment ``digitlab``."""
    from mlflow.tracking import MlflowClient

    uri = ctx.store()
    client = MlflowClient(uri)
    artifacts = str(ctx.tmp / "store" / "mlruns" / "artifacts")
    return uri, client, client.create_experiment("digitlab", artifact_location=artifacts)


def ensemble(row: str) -> Case:
    """digitlab-predict on runs made in a store: A and D with a checkpoint (Kaggle's train.csv,
    held-out rows cut with split seeds 1 and 2), B and C without one, and a sweep's parent
    whose only child still runs."""

    def run(ctx: Ctx) -> list[Said]:
        uri, client, experiment = store_with(ctx)
        kaggle = ["data=kaggle", f"data.root={ctx.data_root}", "data.test_size=40"]
        a, d = (
            new_run(
                client,
                experiment,
                name,
                checkpoint=checkpoint(
                    ctx.folder(name) / "best.ckpt", *kaggle, f"data.split_seed={n}"
                ),
            )
            for n, name in ((1, "a"), (2, "d"))
        )
        b, c = new_run(client, experiment, "b"), new_run(client, experiment, "c")
        parent = new_run(client, experiment, "sweep", status="RUNNING")
        new_run(client, experiment, "job", status="RUNNING", **{"mlflow.parentRunId": parent})
        mnist = ["--data", "mnist", "--root", str(ctx.data_root)]
        args, renamed, prefixes = {
            "missing": ([a, b, *mnist], {a: "A", b: "B"}, (ERROR,)),
            "skip": ([a, b, *mnist, "--skip-missing"], {b: "B"}, ("digitlab: skipped", ERROR)),
            "holdout": (
                [a, d, "--data", "holdout", "--root", str(ctx.data_root)],
                {a: "A", d: "B"},
                (ERROR,),
            ),
            "none left": ([b, c, *mnist, "--skip-missing"], {}, (ERROR,)),
            "sweep": ([parent, *mnist], {}, (ERROR,)),
        }[row]
        out = ["--tracking-uri", uri, "--out", str(ctx.tmp / "p.npy")]
        return command(
            "digitlab.cli.predict", "--run", *args, *out, renamed=renamed, prefixes=prefixes
        )

    return run


def oof(row: str) -> Case:
    """digitlab-predict --data oof on runs made in a store: A and B each with an out-of-fold
    table (cv/oof.npz) of other rows, C a training run without one."""

    def run(ctx: Ctx) -> list[Said]:
        uri, client, experiment = store_with(ctx)
        a, b, c = (new_run(client, experiment, name) for name in ("a", "b", "c"))
        for run_id, rows in ((a, [0, 1, 2, 3]), (b, [0, 1, 2, 4])):
            table = ctx.folder(run_id) / "oof.npz"
            probs = np.full((4, 10), 0.1, np.float32)
            np.savez(
                table,
                rows=np.array(rows),
                labels=np.zeros(4, int),
                fold=np.array([0, 0, 1, 1]),
                probabilities=probs,
            )
            client.log_artifact(run_id, str(table), "cv")
        args, renamed = {
            "no table": ([c], {}),
            "other folds": ([a, b], {a: "A", b: "B"}),
            "tta": ([a, "--tta"], {}),
            "vote": ([a, "--method", "vote"], {}),
        }[row]
        out = ["--data", "oof", "--tracking-uri", uri, "--out", str(ctx.tmp / "p.npy")]
        return command("digitlab.cli.predict", "--run", *args, *out, renamed=renamed)

    return run


def register(row: str) -> Case:
    """digitlab-register on runs made in a store, each with a logged model (made without
    training): a run with test/acc (registered once before for "again") or without it; or a
    run without a model, or none."""

    def run(ctx: Ctx) -> list[Said]:
        uri, client, experiment = store_with(ctx)
        run_id = new_run(client, experiment, "run")
        if row == "again":
            client.log_metric(run_id, "test/acc", 0.9)
        if row != "no model":
            client.create_logged_model(experiment, name="model", source_run_id=run_id)
        if row == "no test/acc":  # a scored version first, for @best to stay on
            scored = new_run(client, experiment, "scored")
            client.log_metric(scored, "test/acc", 0.9)
            client.create_logged_model(experiment, name="model", source_run_id=scored)
            command("digitlab.cli.register", scored, "--name", "digits", "--tracking-uri", uri)
        args = [UNKNOWN_RUN if row == "unknown" else run_id, "--name", "digits"]
        args += ["--tracking-uri", uri]
        if row == "again":
            command("digitlab.cli.register", *args)
        return command("digitlab.cli.register", *args, prefixes=("digitlab: ",))

    return run


def serve(*args: str) -> Case:
    """digitlab-serve on a new store."""
    return lambda ctx: command("digitlab.cli.serve", "--tracking-uri", ctx.store(), *args)


def serving_a_gone_run(ctx: Ctx) -> list[Said]:
    """A bare digitlab-serve on a store whose only logged model's run row was deleted."""
    uri, client, experiment = store_with(ctx)
    run_id = new_run(client, experiment, "gone")
    client.create_logged_model(experiment, name="model", source_run_id=run_id)
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db, db:
        db.execute("DELETE FROM runs WHERE run_uuid = ?", (run_id,))
    return command("digitlab.cli.serve", "--tracking-uri", uri)


class StubModel:
    """A served model's predict(): the pixels checked as the real one checks them."""

    def predict(self, data):
        from digitlab.serving.model import as_pixels

        n = len(as_pixels(data))
        return {"probabilities": np.full((n, 10), 0.1, np.float32), "digit": np.zeros(n, int)}


def serve_main(*args: str, load=None, listen: Callable | None = None) -> Case:
    """digitlab-serve's main in this process, its model loaded by a stub (or failing as
    ``load`` says) and its server made by ``listen`` (default: bound, then closed unserved)."""

    def run(ctx: Ctx) -> list[Said]:
        from digitlab.cli import serve
        from digitlab.serving import server

        make_server = server.make_server

        def bind_only(*a, **kw):  # never serve_forever: a bind that works is the test's fault
            make_server(*a, **kw).server_close()
            raise AssertionError(f"digitlab-serve could listen on {a[2:4]} here: no error")

        err = io.StringIO()
        uri, model = ctx.store(), f"runs:/{uuid.uuid4().hex}/model"
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
            get = load or (lambda self, uri: StubModel())
            patch.setattr("digitlab.serving.models.ModelCache.get", get)
            patch.setattr(server, "make_server", listen or bind_only)
            patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            with pytest.raises(SystemExit) as exit_:
                serve.main(["--model", model, "--tracking-uri", uri, *args])
        lines = [line for line in err.getvalue().splitlines() if line.startswith(ERROR)]
        return [Said(line, exit_.value.code) for line in lines]

    return run


def port_taken(ctx: Ctx) -> list[Said]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = serve_main("--port", str(port))(ctx)
    return [Said(s.line.replace(f":{port} ", ":5001 "), s.status) for s in said]


def refuse(code: int, filename: str | None = None) -> Callable:
    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code), filename)

    return refused


def damaged_store(ctx: Ctx) -> list[Said]:
    """``digitlab`` on a store whose pages are overwritten in the middle."""
    from test_store_damage import damage_pages, make_store

    db, _ = make_store(ctx.folder("damaged"), ctx.migrated_db)
    damage_pages(db)
    args, env = cli_args([], ctx.data_root, db, ctx.tmp / "out")
    return answers(warm.run("digitlab", *args, env=env, timeout=280))


def store_write_refused(code: int) -> Case:
    """The 1 MiB test write a store gets before an experiment takes a run, refused with
    ``code`` (as a read-only mount or a full disk refuses it: tests/test_store_damage.py
    mounts real ones where it may)."""

    def run(ctx: Ctx) -> list[Said]:
        from digitlab.tracking import store

        uri = ctx.store()
        folder = Path(uri.removeprefix("sqlite:///")).parent
        client = store.open_client(uri)
        real = tempfile.TemporaryFile

        def temporary_file(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise OSError(code, os.strerror(code))
            return real(*args, dir=dir, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "TemporaryFile", temporary_file)
            return [
                raised(
                    lambda: store.get_or_create_experiment(client, "d", str(folder / "artifacts"))
                )
            ]

    return run


HOLD_LOCK = """import pathlib, sqlite3, sys, time
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.01)
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)
"""


def locked_store(mid_run: bool) -> Case:
    """``digitlab`` while another program holds the store's SQLite write lock for 60 s, from
    the start, or (``mid_run``) from when the run's first checkpoint is written. It gives up
    after MLflow's busy timeout with one line naming the file, instead of hanging; mid-run,
    without waiting a second time to end the run, which the next command ends KILLED,
    resumable."""

    def run(ctx: Ctx) -> list[Said]:
        db = Path(ctx.store().removeprefix("sqlite:///"))
        out = ctx.tmp / "out"
        when = out / "checkpoints" / "last.ckpt" if mid_run else db
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(db), str(when)], stdout=subprocess.PIPE, text=True
        )
        try:
            overrides = ["model=mlp", *(["trainer.max_epochs=1000"] if mid_run else [])]
            args, env = cli_args(overrides, ctx.data_root, db, out)
            if not mid_run:
                assert holder.stdout.readline().strip() == "locked"
            result = warm.run("digitlab", *args, env=env, timeout=280)
            if mid_run:  # (the lock was taken once the first checkpoint was written)
                assert holder.stdout.readline().strip() == "locked"
        finally:
            holder.kill()
            holder.wait()
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        said = answers(result)
        if not mid_run:
            assert no_run_in(db)
            seconds = int(re.search(r"for (\d+) s", said[0].line).group(1))
            assert 20 <= seconds <= 25, said  # it retried for 20 s, a last try waits up to 5
            return said
        import torch
        from mlflow.tracking import MlflowClient
        from omegaconf import OmegaConf

        from digitlab.tracking import store
        from digitlab.tracking.tags import RUN_ID_KEY

        client = MlflowClient(f"sqlite:///{db}")
        (left,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert left.info.status == "RUNNING"  # as the message says, until the next command
        logger = {"tracking_uri": f"sqlite:///{db}", "artifact_location": str(db.parent / "a")}
        store.open_experiment(OmegaConf.create({**logger, "experiment_name": "digitlab"}))
        assert client.get_run(left.info.run_id).info.status == "KILLED"
        stamped = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)[RUN_ID_KEY]
        assert stamped == left.info.run_id  # resume=<id> finds it in its job folder
        return said

    return run


def optuna_storage(ctx: Ctx) -> list[Said]:
    """A sweep's parent run is made before the sweeper opens its storage: it ends FAILED (so
    not a ``cli`` case, which must leave no run)."""
    db = Path(ctx.store().removeprefix("sqlite:///"))
    overrides = ["-m", "experiment=search", "hydra.sweeper.storage=postgresql://nowhere/db"]
    args, env = cli_args(overrides, ctx.data_root, db, ctx.tmp / "out")
    return answers(warm.run("digitlab", *args, env=env, timeout=280))


KWARGS_NET = '''from digitlab.models import MLP


class Net(MLP):
    """Takes what MLP takes, as **settings: its source does not tell which."""

    def __init__(self, **settings):
        super().__init__(**settings)
'''


def added_key_built(ctx: Ctx) -> list[Said]:
    """An added key of a network whose arguments only its build tells (a user's, trusted)."""
    (ctx.tmp / "kwnet.py").write_text(KWARGS_NET)
    db = Path(ctx.store().removeprefix("sqlite:///"))
    overrides = ["model=mlp", "model._target_=kwnet.Net", "trusted_targets=[kwnet]"]
    args, env = cli_args([*overrides, "+model.widthh=3"], ctx.data_root, db, ctx.tmp / "out")
    env["PYTHONPATH"] = str(ctx.tmp)
    return answers(warm.run("digitlab", *args, env=env, timeout=280))


# --- digitlab-serve's answers ----------------------------------------------------------------


def raw(port: int, data: bytes, close: bool = True) -> tuple[int, dict, str]:
    """Send ``data`` as it is (then, with ``close``, no more): (status, headers, message)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        if close:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/"):  # to a request line it cannot read: no head (HTTP/0.9)
        error = json.loads(answer)
        return HTTPStatus[error["error_code"]].value, {}, error["message"]
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (h.split(": ", 1) for h in header_lines)}
    status = int(status_line.split()[1])
    if not headers.get("content-type", "").startswith("application/json"):  # uvicorn's own
        return status, headers, body.decode()
    return status, headers, json.loads(body).get("message", body.decode())


def request(path="/invocations", body=b"", method="POST", host="127.0.0.1", kind=None, length=True):
    """An HTTP request's bytes; ``body`` not bytes is sent as JSON; ``length``: the
    Content-Length to state (True: the body's, False: none)."""
    if not isinstance(body, bytes):
        body, kind = json.dumps(body).encode(), kind or "application/json"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if kind or method == "POST":
        head += f"Content-Type: {kind or 'application/json'}\r\n"
    if length is not False:
        head += f"Content-Length: {len(body) if length is True else length}\r\n"
    return (head + "\r\n").encode() + body


def png(pixels: np.ndarray | None) -> str:
    from PIL import Image

    data = io.BytesIO()
    if pixels is None:
        data.write(b"\x89PNG not one")
    else:
        Image.fromarray(pixels).save(data, format="PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


@contextlib.contextmanager
def serving(models, default: str = "models:/stub@best"):
    """digitlab-serve's server of ``models`` on a free port in this process: yields the port."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from digitlab.serving.server import make_server

    server = make_server(MlflowClient(models.tracking_uri), default, models=models)
    thread = threading.Thread(target=server.serve_forever)
    previous = mlflow.get_tracking_uri()  # a model cache points MLflow's fluent API at its store
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        mlflow.set_tracking_uri(previous)


def served(*requests: bytes, stalled: bool = False) -> Case:
    """The answers to ``requests``: the default model a stub that checks pixels as the real
    one does, ``?model=boom`` a store that fails, any other model URI the (empty) store's."""

    def run(ctx: Ctx) -> list[Said]:
        from digitlab.serving.models import ModelCache

        cache = ModelCache(ctx.store())

        class Models:
            tracking_uri = cache.tracking_uri

            def get(self, model: str):
                if model == "models:/stub@best":
                    return StubModel()
                if model == "boom":
                    raise RuntimeError("the store failed")
                return cache.get(model)

        with serving(Models()) as port:
            said = []
            for data in requests:
                status, headers, message = raw(port, data, close=not stalled)
                if data.startswith(b"PUT"):
                    assert headers.get("allow") == "GET, HEAD, POST", headers
                said.append(Said(message.replace(f":{port}/", ":5001/"), status))
        return said

    return run


def busy(ctx: Ctx) -> list[Said]:
    """A server whose cache allows one load at once, a slow one under way: the answer to a
    request for another model not loaded yet."""
    from digitlab.serving.models import ModelCache

    loading, release = threading.Event(), threading.Event()

    def load(uri: str) -> StubModel:  # a download taking its time
        loading.set()
        release.wait(60)
        return StubModel()

    pixels = {"inputs": [[0] * 784]}
    with serving(ModelCache(ctx.store(), loading=1, load=load), "m") as port:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(raw, port, request("/invocations?model=models:/slow/1", pixels))
            try:
                assert loading.wait(30), "the slow load never began"
                status, headers, message = raw(
                    port, request("/invocations?model=models:/other/1", pixels)
                )
                assert headers.get("retry-after") == "5", headers
            finally:
                release.set()
            assert slow.result()[0] == 200
    return [Said(message, status)]


# --- the Python API --------------------------------------------------------------------------


def api(call: Callable[[Ctx], object]) -> Case:
    """The DigitlabError ``call(ctx)`` raises, in this process."""
    return lambda ctx: [raised(lambda: call(ctx))]


def in_another_context(ctx: Ctx) -> None:
    from hydra import initialize_config_dir

    from digitlab.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        digitlab.compose("model=mlp")


def show_nothing(ctx: Ctx) -> None:
    """digitlab.show on a run holding the files a default run logs, as empty files."""
    uri, client, experiment = store_with(ctx)
    logged = ctx.folder("logged")
    for name in DEFAULT_RUN_ARTIFACTS:
        (logged / name).parent.mkdir(parents=True, exist_ok=True)
        (logged / name).touch()
    run_id = new_run(client, experiment, "lenet-mnist-sgd-s42")
    client.log_artifacts(run_id, str(logged))
    digitlab.show(run_id, "nothing/*", tracking_uri=uri)


# What a run of the default config logs (digitlab.show lists them).
DEFAULT_RUN_ARTIFACTS = [
    "checkpoints/best.ckpt",
    "config.yaml",
    *(
        f"figures/data/{name}.png"
        for name in ("label_histogram", "samples_test", "samples_train", "samples_val")
    ),
    *(
        f"figures/filters/conv{n}_{name}"
        for n in (1, 2)
        for name in ("final.png", "init.png", "stats_final.json", "stats_init.json")
    ),
    *(
        f"figures/predictions/{name}.png"
        for name in (
            "confident_mistakes",
            "confusion_matrix",
            "per_class_accuracy",
            "probabilities",
        )
    ),
]


def ui_on_a_busy_port(ctx: Ctx) -> None:
    with socket.socket() as held:  # another program serving on the port asked for
        held.bind(("127.0.0.1", 0))
        held.listen()
        digitlab.ui(tracking_uri=ctx.store(), port=held.getsockname()[1])


def model_predict(images: np.ndarray) -> Case:
    def call(ctx: Ctx) -> None:
        from digitlab.api.model import Model

        Model(net=None, config={}).predict(images)

    return api(call)


# --- a run's ending --------------------------------------------------------------------------


def run_ending(body: Callable, last: bool = True) -> Case:
    """A TrackedRun of a new store, its checkpoint folder holding ``last.ckpt`` if ``last``,
    given ``body(run)``: the line the command prints as it ends, with its exit status."""

    def run(ctx: Ctx) -> list[Said]:
        from digitlab.errors import DigitlabError
        from digitlab.tracking.run import TrackedRun

        uri, client, experiment = store_with(ctx)
        checkpoints = ctx.folder("checkpoints")
        if last:
            (checkpoints / "last.ckpt").write_bytes(b"epoch 1's weights")
        try:
            with TrackedRun(
                client, experiment, {"seed": 42}, checkpoints, "mlp-mnist-sgd-s42"
            ) as r:
                body(r)
        except DigitlabError as e:  # as digitlab.cli.train prints it
            return [Said(f"digitlab: {e.kind}: {e}", e.exit_code)]
        raise AssertionError("the run ended without a word")

    return run


def interrupt(signum: int) -> Callable:
    def body(run) -> None:  # the signal, then Lightning's stop at the next batch
        from digitlab.tracking.logger import StopOnSignal

        os.kill(os.getpid(), signum)
        StopOnSignal().on_train_batch_start(None, None, None, 0)

    return body


def non_finite_loss(run) -> None:
    import torch

    from digitlab.callbacks.guards import StopOnNonFiniteLoss

    trainer = SimpleNamespace(global_step=10, current_epoch=1, num_training_batches=10)
    nan = {"loss": torch.tensor(float("nan"))}
    StopOnNonFiniteLoss().on_train_batch_end(trainer, None, nan, None, 9)


def disk_full(run) -> None:
    """Lightning's checkpoint writer finds no space left."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from digitlab.training.checkpoint_io import AtomicCheckpointIO

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TorchCheckpointIO, "save_checkpoint", refuse(errno.ENOSPC))
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, run.checkpoint_dir / "last.ckpt")


def artifacts_unwritable(ctx: Ctx) -> list[Said]:
    """The artifact folder refuses files once the run began, to its end."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def refuse_file(self, local_file, artifact_path=None) -> None:
        where = f"{self.artifact_dir}/{Path(local_file).name}"
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), where)

    with pytest.MonkeyPatch.context() as patch:

        def log_best(run) -> None:  # (the run began: its config.yaml is logged)
            patch.setattr(LocalArtifactRepository, "log_artifact", refuse_file)
            (run.checkpoint_dir / "best.ckpt").write_bytes(b"the best weights")
            run.log_checkpoint(run.checkpoint_dir / "best.ckpt")

        return run_ending(log_best)(ctx)


def killed_outright(ctx: Ctx) -> list[Said]:
    """A RUNNING run whose owner process is gone, found by the next command on the store."""
    from digitlab.tracking.owners import HOST_TAG, PID_TAG, reap_dead_owners
    from digitlab.tracking.run import CHECKPOINT_DIR_TAG

    _, client, experiment = store_with(ctx)
    (ctx.tmp / "last.ckpt").write_bytes(b"weights")
    tags = {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(dead_pid()),
        CHECKPOINT_DIR_TAG: str(ctx.tmp),
    }
    new_run(client, experiment, "mlp-mnist-sgd-s42", status="RUNNING", **tags)
    return [Said(line) for line in reap_dead_owners(client, experiment)]


def dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


# A process where signals come as the script says: {setup}, then {signals}, each raising
# KeyboardInterrupt where it is still honoured; then whatever ends it.
SIGNALS = """
import os, signal, time
{setup}
for name in {signals!r}:
    try:
        os.kill(os.getpid(), getattr(signal, name))
    except KeyboardInterrupt:
        pass
{after}
"""
# A sweep of the basic launcher started in this process on the store of argv[1], one of its
# jobs' runs owned by a process that is gone (as joblib's stopped workers are).
SWEEP = """
import socket, sys
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from digitlab.config import CONF_DIR, register_resolvers
from digitlab.tracking import sweep
from digitlab.tracking.owners import HOST_TAG, PID_TAG
register_resolvers()
uri, folder, dead = sys.argv[1:4]
with initialize_config_dir(config_dir=CONF_DIR.as_posix(), version_base="1.3"):
    overrides = [f"logger.tracking_uri={uri}", f"logger.artifact_location={folder}/artifacts"]
    overrides.append(f"hydra.sweep.dir={folder}/multirun")
    cfg = compose("config", overrides=overrides, return_hydra_config=True)
started = sweep.MlflowSweep()
started.on_multirun_start(cfg)
client = MlflowClient(uri)
parent = client.get_run(started.parent_id)
tags = {"mlflow.parentRunId": parent.info.run_id, HOST_TAG: socket.gethostname(), PID_TAG: dead}
client.create_run(parent.info.experiment_id, run_name="job", tags=tags)
"""


def signals(setup: str, names: list[str], after: str = "") -> Case:
    def run(ctx: Ctx) -> list[Said]:
        script = SIGNALS.format(setup=setup, signals=names, after=after)
        argv = [sys.executable, "-c", script, ctx.store(), str(ctx.tmp), str(dead_pid())]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=280)
        return answers(result, ("digitlab: interrupted: ",))

    return run


ENDED = """
line, status = sweep.end_interrupted_sweep()
print(f"digitlab: interrupted: {line}", flush=True)
os._exit(status)
"""


# --- the links -------------------------------------------------------------------------------


def emnist_files(*overrides: str) -> Case:
    """On a data root holding MNIST and Kaggle's set only."""
    return cli("data=emnist_balanced", *overrides, damage=lambda root: None)


CASES: dict[str, Case] = {
    # Bad input: the data
    "data folder missing": cli("data.source.download=false", env={"DIGITLAB_DATA": "/nowhere"}),
    "Kaggle folder missing": cli(
        "data=kaggle", damage=lambda r: shutil.rmtree(r / "digit-recognizer")
    ),
    "one IDX file missing": cli(
        "data.source.download=false",
        damage=lambda r: (r / RAW / "t10k-labels-idx1-ubyte.gz").unlink(),
    ),
    "EMNIST files missing": emnist_files(),
    # Nothing listens on the archive's port: the download is refused.
    "the same with `data.source.download=true`, offline": emnist_files(
        "data.source.download=true", "data.source.archive=http://127.0.0.1:{port}/gzip.zip"
    ),
    "download fails (offline, 404, wrong checksum)": each(
        cli(
            "data.source.mirrors=[http://127.0.0.1:{port}/]",
            damage=lambda r: shutil.rmtree(r / "MNIST"),
        ),
        download_fails,
    ),
    "data root that does not exist, download on": cli("data.root=/nowhere"),
    "truncated `.gz`": cli(
        damage=lambda r: (r / RAW / "train-images-idx3-ubyte.gz").write_bytes(
            (r / RAW / "train-images-idx3-ubyte.gz").read_bytes()[:500]
        )
    ),
    "IDX header larger than its file": idx_header_too_large,
    "IDX file unreadable, or a folder": idx_unreadable,
    "wrong IDX magic number": cli(
        damage=lambda r: (r / RAW / "train-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x0d\x01" + bytes(8))
        )
    ),
    "image/label count mismatch": cli(
        damage=lambda r: (r / RAW / "train-labels-idx1-ubyte.gz").write_bytes(
            idx_gz(np.zeros(239, np.uint8))
        )
    ),
    "image size not 28×28": cli(
        damage=lambda r: (r / RAW / "t10k-images-idx3-ubyte.gz").write_bytes(
            idx_gz(np.zeros((80, 32, 32), np.uint8))
        )
    ),
    "Kaggle CSV, wrong header": cli(
        "data=kaggle", damage=edit_csv_line(1, lambda c: ["digit", *c[1:]])
    ),
    "Kaggle CSV, short row": cli("data=kaggle", damage=edit_csv_line(5, lambda c: c[:400])),
    "Kaggle CSV, non-numeric cell": cli(
        "data=kaggle", damage=edit_csv_line(7, lambda c: [*c[:10], "x", *c[11:]])
    ),
    "Kaggle CSV, pixel outside 0–255": cli(
        "data=kaggle", damage=edit_csv_line(3, lambda c: [c[0], "300", *c[2:]])
    ),
    "Kaggle CSV, label outside 0–9": cli(
        "data=kaggle", damage=edit_csv_line(4, lambda c: ["12", *c[1:]])
    ),
    "Kaggle CSV not UTF-8 (latin-1, UTF-16)": kaggle_not_utf8,
    "Kaggle CSV that is binary (a 1 GB file of NUL bytes)": lambda ctx: [
        read_csv(train_csv(ctx, "nul", lambda b: bytes(1 << 20)))
    ],
    "Kaggle CSV line longer than any row": lambda ctx: [
        read_csv(train_csv(ctx, "long", lambda b: b.split(b"\r\n")[0] + b"\r\n" + b"1," * 10_000))
    ],
    "Kaggle CSV unreadable, or a folder": kaggle_unreadable,
    "Kaggle CSV, header only": lambda ctx: [
        read_csv(train_csv(ctx, "header", lambda b: b.split(b"\r\n")[0] + b"\r\n"))
    ],
    "Kaggle CSV, one row": kaggle_one_row,
    "Kaggle CSV with LF line ends, or a UTF-8 byte-order mark": kaggle_lf_and_bom,
    "`test.csv` where `train.csv` is needed": cli("data=kaggle", "data.source.file=test.csv"),
    # Bad input: the settings
    "wrong value type (`optimizer.lr=abc`)": cli("optimizer.lr=abc"),
    "wrong value type (`data.batch_size=1.5`)": cli("data.batch_size=1.5"),
    "layer widths not a list": cli("model.channels=abc"),
    "a zero-width layer": each(cli("model=mlp", "model.hidden=[0]"), cli("model.kernel_size=0")),
    "the classes set on the network": cli("+model.num_classes=7"),
    "an infinite or NaN number": each(cli("optimizer.lr=inf"), cli("data.mean=nan")),
    "seed outside numpy's and torch's range": each(cli("seed=-1"), cli("seed=99999999999")),
    "no devices": cli("trainer.devices=0"),
    "negative learning rate": cli("optimizer.lr=-0.1"),
    "batch size 0": cli("data.batch_size=0"),
    "several optimizer steps per call set to 0": cli("data.steps_per_call=0"),
    "gradient accumulation with several optimizer steps per call": cli(
        "data.steps_per_call=20", "+trainer.accumulate_grad_batches=4"
    ),
    "validation fraction outside (0, 1)": cli("data.val_size=1.5"),
    "validation holdout as large as the data": cli("data.val_size=240"),
    "a picture count that cannot work": cli("figures.samples=0"),
    "Apple's MPS on another machine": cli("trainer.accelerator=mps"),
    "corrupt MLflow store": cli(
        damage=lambda r: (r.parent / "mlruns" / "mlflow.db").write_bytes(b"not a database " * 300)
    ),
    "damaged MLflow store": damaged_store,
    "read-only MLflow store folder": store_write_refused(errno.EROFS),
    "disk full under the MLflow store": store_write_refused(errno.ENOSPC),
    "MLflow store locked by another program": locked_store(mid_run=False),
    "MLflow store locked by another program while a run trains": locked_store(mid_run=True),
    "cross-validation folds below 2": cli("data.folds=1"),
    "more folds than training rows": cli("data.folds=500"),
    "Optuna storage unreachable or malformed": optuna_storage,
    "unreachable tracking server": cli("logger.tracking_uri=http://127.0.0.1:{port}"),
    "a config naming code to run": cli("model._target_=os.system"),
    "a checkpoint whose saved config names code outside the allow-list": predict_crafted(
        lambda config: config["model"].update(_target_="crafted_marker.build")
    ),
    "a checkpoint whose saved recipe is not plain data": predict_crafted(
        lambda config: config["model"].update(
            activation={"_target_": "digitlab.data.sources.load_idx", "folder": "/tmp"}
        )
    ),
    "unknown scheduler interval": cli("scheduler=cosine", "scheduler.interval=hourly"),
    "ReduceLROnPlateau stepped per step": cli("scheduler=plateau", "scheduler.interval=step"),
    "ReduceLROnPlateau without a validation every epoch": cli(
        "scheduler=plateau", "trainer.limit_val_batches=0"
    ),
    "a trainer setting Lightning rejects": cli("trainer.precision=banana"),
    "GPU requested, none present": cli("trainer.accelerator=gpu"),
    "corrupt checkpoint": cli("resume={tmp}/data/corrupt.ckpt", damage=resume_checkpoints),
    "checkpoint of another architecture": cli(
        "resume={tmp}/data/mlp.ckpt", damage=resume_checkpoints
    ),
    "checkpoint holding pickled objects": cli(
        "resume={tmp}/data/foreign.ckpt", damage=resume_checkpoints
    ),
    "unknown run to resume": cli(f"resume={UNKNOWN_RUN}"),
    # Bad input: digitlab-register, -serve and -predict
    "registering a run that logged no model": register("no model"),
    "registering an unknown run": register("unknown"),
    "registering a run that has no `test/acc`": register("no test/acc"),
    "registering a run again": register("again"),
    "serving a store without models": serve(),
    "serving a model that is not there": serve("--model", "models:/nope@best"),
    "port taken": port_taken,
    "an address not of this machine": serve_main("--host", "192.0.2.1", "--port", "5001"),
    # (where root runs this, binding port 80 works: made to fail as for a user without root)
    "a port below 1024 without root": serve_main(
        "--port", "80", listen=refuse(errno.EACCES) if os.geteuid() == 0 else None
    ),
    "serving a store whose newest logged model lost its run": serving_a_gone_run,
    "a model's file unreadable, or no room to copy it": serve_main(
        "--port", "0", load=refuse(errno.ENOSPC, "/tmp/digitlab-serve-x/best.ckpt")
    ),
    "an ensemble member whose run or checkpoint is missing or refused": ensemble("missing"),
    "the same with `--skip-missing`": ensemble("skip"),
    "members that held out different rows": ensemble("holdout"),
    "every member missing or refused": ensemble("none left"),
    "a sweep's parent without a finished child": ensemble("sweep"),
    "a committee's out-of-fold accuracy of a run that is no cross-validation": oof("no table"),
    "cross-validations that cut different folds": oof("other folds"),
    "out-of-fold predictions with test-time augmentation": oof("tta"),
    "out-of-fold predictions by vote": oof("vote"),
    "a final fit with a test holdout": cli("data=kaggle", "data.val_size=0", "data.test_size=40"),
    "a final fit with a callback watching validation": cli(
        "data.val_size=0",
        "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.stop.monitor=val/acc",
    ),
    # Bad input: the words of the command line
    "unknown option of a group": cli("model=lenett"),
    "misspelt preset (an optional group)": cli("experiment=fastt"),
    "an option in a sweep": cli("-m", "model=mlp,lenett"),
    "unknown key": cli("optimizer.lrr=1"),
    "a key one option of a sweep lacks": cli("-m", "model=lenet,mlp", "model.kernel_size=3"),
    "an added key the class does not take": each(cli("+optimizer.lrr=1"), added_key_built),
    "an added key that is there": cli("+optimizer.lr=0.1"),
    "a group set to null": cli("scheduler=null"),
    "a sweep without `-m`": cli("model=mlp,lenet"),
    "an override Hydra cannot read": cli("model.channels=[1,"),
    "an override written as a flag": cli("--model=mlp"),
    "a key of a nested node, given alone": cli("max_epochs=1"),
    "`--cfg` with `-m`": cli("-m", "--cfg=job", "model=mlp,lenet"),
    "output folder that cannot be written": each(
        cli("hydra.run.dir=/proc"), cli("hydra.run.dir=/dev/null/out")
    ),
}
CASES = {f"Bad input: {row}": case for row, case in CASES.items()}

PIXELS = {"inputs": [[0] * 784]}
CASES |= {
    f"Requests to `digitlab-serve`: {row}": case
    for row, case in {
        "pixels of another shape": served(request(body={"inputs": [[0] * 783]})),
        "pixels that are not numbers (strings, booleans)": served(
            request(body={"inputs": [["a"] * 784]}), request(body={"inputs": [[True] * 784]})
        ),
        "ragged lists": served(request(body={"inputs": [[0] * 784, [0] * 3]})),
        "values outside 0..255, NaN": served(
            request(body={"inputs": [[0] * 783 + [256]]}),
            request(body={"inputs": [[float("nan")] * 784]}),
        ),
        "no images, or more than 10 000": served(
            request(body={"inputs": []}),
            request(
                body=b'{"inputs": [' + b",".join([b"[" + b"0," * 783 + b"0]"] * 10_001) + b"]}"
            ),
        ),
        "body not JSON": served(request(body=b"not json")),
        "JSON without pixels": served(request(body={"pixel": PIXELS["inputs"]})),
        "more JSON values, lists or strings than pixels of 10 000 images need (counted on the "
        "body's bytes, before it is parsed)": served(request(body=b"[" + b"[]" * 300_000 + b"]")),
        "body nested deeper than Python's recursion limit (about 1 000 levels)": served(
            request(body=b"[" * 100_000)
        ),
        "no Content-Length": served(request(length=False)),
        "body over 64 MiB (checked on Content-Length, before reading)": served(
            request(length=64 * 2**20 + 1)
        ),
        "body not sent as `application/json` (a `charset` is fine)": served(
            request(body=json.dumps(PIXELS).encode(), kind="text/plain")
        ),
        "body stops arriving (5 s without data, or 60 s in all)": served(
            request(body=b'{"inp', length=100), stalled=True
        ),
        "Host not 127.0.0.1, localhost, ::1 or an allowed name (server bound to loopback)": served(
            request("/", method="GET", host="evil.example", length=False)
        ),
        "a method other than GET, HEAD, POST": served(request("/", method="PUT", length=False)),
        "a request that is not HTTP/1.1 (a malformed request line)": served(b"NONSENSE\r\n\r\n"),
        "a failure of the server itself (a bug, a store that fails)": served(
            request("/invocations?model=boom", PIXELS)
        ),
        "a model not loaded yet while 4 requests wait on model loads (`--any-model`)": busy,
        "unknown model, or not a model URI": served(
            request("/invocations?model=models:/nope@best", PIXELS),
            request("/invocations?model=/etc/passwd", PIXELS),
        ),
        "a drawing that is empty or not a PNG": served(
            request("/draw", {"png": png(np.zeros((28, 28), np.uint8))}),
            request("/draw", {"png": png(None)}),
        ),
        "unknown path": served(request("/x", method="GET", length=False)),
    }.items()
}


CASES |= {
    f"From Python: {row}": case
    for row, case in {
        "unknown option of a group": api(lambda ctx: digitlab.compose("model=resnet")),
        "unknown key, sweep syntax": each(
            api(lambda ctx: digitlab.compose("optimizer.lrr=1")),
            api(lambda ctx: digitlab.compose("optimizer.lr=0.1,0.2")),
        ),
        "a command-line flag": api(lambda ctx: digitlab.compose("-m", "model=mlp")),
        "another Hydra context open": api(in_another_context),
        "unknown filter": api(lambda ctx: digitlab.runs(tracking_uri=ctx.store(), colour="red")),
        "a filter MLflow cannot parse": api(
            lambda ctx: digitlab.runs(
                tracking_uri=ctx.store(), filter_string="params.optimizer.lr = 0.1"
            )
        ),
        "images of another shape": model_predict(np.zeros((2, 32, 32))),
        "pixel values outside 0–255": model_predict(
            np.arange(2 * 784).reshape(2, 28, 28) % 256 / 255 - 0.5
        ),
        "unknown run": each(
            api(lambda ctx: digitlab.load(UNKNOWN_RUN, tracking_uri=ctx.store())),
            api(lambda ctx: digitlab.show(UNKNOWN_RUN, tracking_uri=ctx.store())),
        ),
        "no artifact matches": api(show_nothing),
        "nothing to predict with": api(lambda ctx: digitlab.predict(data="mnist")),
        "no store yet": api(
            lambda ctx: digitlab.ui(tracking_uri=f"sqlite:///{ctx.tmp}/mlruns/mlflow.db")
        ),
        "port taken": api(ui_on_a_busy_port),
    }.items()
}

STOP = "from digitlab.tracking.signals import STOP\nSTOP.__enter__()"
CASES |= {
    f"During training: {row}": case
    for row, case in {
        "loss becomes NaN or inf": run_ending(non_finite_loss),
        "Ctrl-C (SIGINT)": run_ending(interrupt(signal.SIGINT)),
        "SIGTERM": run_ending(interrupt(signal.SIGTERM)),
        "Ctrl-C before the first epoch ends": run_ending(interrupt(signal.SIGINT), last=False),
        "Ctrl-C during the test pass": run_ending(interrupt(signal.SIGINT)),
        # the signal came once no batch was left to stop at
        "Ctrl-C while the finished run is being recorded": run_ending(
            lambda run: os.kill(os.getpid(), signal.SIGINT)
        ),
        "a second Ctrl-C (or SIGTERM) while the first is honoured": signals(
            STOP, ["SIGINT", "SIGINT"], "time.sleep(10)"
        ),
        "Ctrl-C or a failing job in a `-m` sweep": signals(SWEEP, ["SIGINT"], ENDED),
        "a second Ctrl-C (or SIGTERM) in a `-m` sweep": signals(
            SWEEP, ["SIGTERM", "SIGTERM"], "time.sleep(10)"
        ),
        "disk full or checkpoint folder unwritable": run_ending(disk_full),
        "MLflow's artifact folder unwritable or full after the run began": artifacts_unwritable,
        "SIGKILL, out-of-memory kill or power cut": killed_outright,
    }.items()
}
# Rows whose message column points at another row's: (that row, words replaced).
SAME_AS = {
    "Bad input: an option in a sweep": ("Bad input: unknown option of a group", {}),
    "During training: SIGTERM": ("During training: Ctrl-C (SIGINT)", {"SIGINT": "SIGTERM"}),
    "During training: Ctrl-C during the test pass": ("During training: Ctrl-C (SIGINT)", {}),
}
ROWS = {row.key: row for row in doc_rows()}


@pytest.mark.slow  # minutes in all: most rows start a command
@pytest.mark.parametrize("key", list(ROWS), ids=list(ROWS))
def test_a_row_of_the_page_is_what_its_case_answers(key, tmp_path, migrated_db, data_root):
    row = ROWS[key]
    assert key in CASES, f"docs/errors.md:{row.line}: no case runs this row's input: add one"
    if key == "Bad input: GPU requested, none present":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU: the row is a machine without one")
    answered = CASES[key](Ctx(tmp_path, migrated_db, data_root))
    stated = messages(row.message)
    if key in SAME_AS:
        other, replaced = SAME_AS[key]
        stated = [
            functools.reduce(lambda s, r: s.replace(*r), replaced.items(), span)
            for span in messages(ROWS[other].message)
        ]
    shown = "\n".join(f"  [{a.status}] {a.line}" for a in answered) or "  (nothing)"
    if row.message.startswith("not an error"):
        assert not any(a.line.startswith(ERROR) for a in answered), shown
    else:
        assert stated, f"docs/errors.md:{row.line}: the row states no message to check"
    for span in stated:
        assert any(says(span, a.line) for a in answered), (
            f"docs/errors.md:{row.line} says\n  {span}\nbut the code answered\n{shown}"
        )
    for answer in answered:
        assert row.statuses is None or answer.status in {None, *row.statuses}, (
            f"docs/errors.md:{row.line} gives status {sorted(row.statuses)}, the code:\n{shown}"
        )


def test_every_table_is_checked_and_every_case_names_a_row():
    """A new table must say whose messages it holds (COLUMNS) or what checks it (BEHAVIOUR); a
    case whose row was renamed or removed is stale."""
    for section, _, _ in tables(DOC.read_text()):
        assert section in {*COLUMNS, *BEHAVIOUR}, f"docs/errors.md: a table under '## {section}'"
    stale = sorted({*CASES, *SAME_AS} - set(ROWS))
    assert not stale, f"cases of no row of docs/errors.md (renamed or removed?): {stale}"


def test_the_safety_section_names_the_allow_list():
    """The packages a config may name code under, as docs/errors.md's Safety section says."""
    from digitlab.config.targets import PROJECT_TARGETS, check_targets

    safety = DOC.read_text().partition("## Safety")[2]
    named = re.search(r"may only\s+name something under (.+?) \(`([\w.]+)`", safety, re.S)
    assert named, safety
    assert re.findall(r"`([\w.]+)\.`", named.group(1)) == list(PROJECT_TARGETS), named.group(0)
    assert named.group(2) == f"{check_targets.__module__}.{check_targets.__name__}"
