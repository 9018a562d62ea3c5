"""docs/errors.md, row by row, against what the code answers: each row of its message tables is
linked to a case that runs the row's input, and the row's messages must be what the case got.

A message in the page reads as a pattern: ``…`` stands for any text, a placeholder such as
``<id>``, ``<root>`` or ``<port>`` for one word (``<reason>`` for any text), the rest is literal.
A row's messages are the code spans of its message column that hold ": " (a parenthesised span
is part of a message), or all of its spans where none does. Each must match a whole line its
case answered (with or without ``digitlab: error: ``), and every exit or HTTP status the case
saw must be one the row (or its section) gives. A row whose column starts "not an error" must
answer without an error. Rows are linked to cases by their Case text (``LINKS``): a row without
a case, and a case without a row, fail.

The cases: the command lines of tests/test_errors.py (``CASES``, run once for both files, see
``shared_outcomes``); for rows whose input is no ``digitlab`` training command, a runner here:
digitlab-predict, -register and -serve forked warm (tests/warm.py), the data readers called on
a crafted file, digitlab-serve's answers to real requests in this process, the Python API, and
a run's ending (``TrackedRun``) given the failure or signal it reports here; the signals
themselves, sent to real training processes, are tests/test_interrupt.py's.
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
import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import warm
from conftest import copy_store, write_kaggle
from test_errors import LOCKED, LOCKED_MID_RUN, cli_args, shared_outcomes

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ERROR = "digitlab: error: "

# The column of each section's tables holding the messages, and the one holding the exit status
# or HTTP status (None: the section says it once, as "Exit status 1 in every row").
COLUMNS = {
    "Bad input": ("Message", None),
    "Requests to `digitlab-serve`": ("Message", "Status"),
    "From Python": ("Message", None),
    "During training": ("What happens", "Exit"),
}
# The exit status of every row of a section without a status column (None: no status to check).
SECTION_STATUS = {"Bad input": 1, "From Python": None}
# Sections whose tables describe behaviour, not messages: where that behaviour is checked.
BEHAVIOUR = {
    "Resuming": "what a resumed run does: tests/test_interrupt.py and tests/test_figures.py "
    "compare its weights, metrics and pictures with an uninterrupted run's",
}
# Rows whose message column points at another row's messages: (that row, words replaced).
SAME_AS = {
    "Bad input: an option in a sweep": ("Bad input: unknown option of a group", {}),
    "During training: SIGTERM": ("During training: Ctrl-C (SIGINT)", {"SIGINT": "SIGTERM"}),
    "During training: Ctrl-C during the test pass": ("During training: Ctrl-C (SIGINT)", {}),
}


# --- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    section: str
    case: str  # the Case cell, and the second cell where two rows of a section share the first
    message: str
    status: str | None  # the status column's cell, if the table has one
    line: int  # in docs/errors.md

    @property
    def key(self) -> str:
        return f"{self.section}: {self.case}"


def cells(line: str) -> list[str]:
    """A table line's cells; a | inside a code span does not split."""
    found, cell, code = [], "", False
    for char in line.strip().removeprefix("|").removesuffix("|"):
        code ^= char == "`"
        if char == "|" and not code:
            found.append(cell.strip())
            cell = ""
        else:
            cell += char
    return [*found, cell.strip()]


def tables(text: str) -> list[tuple[str, list[str], list[tuple[int, list[str]]]]]:
    """(section, header cells, [(line number, cells)]) of each table of the page."""
    found, section, lines = [], "", text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        if line.startswith("## "):
            section = line[3:].strip()
        separator = lines[number + 1] if number + 1 < len(lines) else ""
        if line.startswith("|") and separator.startswith("|") and not separator.strip("|-: "):
            header, rows = cells(line), []
            number += 2
            while number < len(lines) and lines[number].startswith("|"):
                rows.append((number + 1, cells(lines[number])))
                number += 1
            found.append((section, header, rows))
            continue
        number += 1
    return found


def column(header: list[str], name: str | None) -> int | None:
    if name is None:
        return None
    (index,) = [i for i, cell in enumerate(header) if cell.startswith(name)]
    return index


def doc_rows(text: str) -> list[Row]:
    """The rows of every message table (the sections of ``COLUMNS``)."""
    found = []
    for section, header, lines in tables(text):
        if section not in COLUMNS:
            continue
        message, status = (column(header, name) for name in COLUMNS[section])
        found += [
            (section, row, row[message], None if status is None else row[status], number)
            for number, row in lines
        ]
    cases = [(section, row[0]) for section, row, *_ in found]
    return [
        Row(
            section,
            f"{row[0]} ({row[1]})" if cases.count((section, row[0])) > 1 else row[0],
            message,
            status,
            number,
        )
        for section, row, message, status, number in found
    ]


ROWS = doc_rows(DOC.read_text())
SPAN = re.compile(r"`([^`]+)`")
PLACEHOLDER = re.compile(r"(…|<[a-z][a-z0-9 ]*>)")
FREE_TEXT = {"<reason>"}  # placeholders for several words


def pattern(span: str) -> re.Pattern:
    """The page's ``span`` as a regular expression (see the module's docstring)."""
    parts = []
    for part in PLACEHOLDER.split(span):
        if part == "…":
            parts.append(".*")
        elif PLACEHOLDER.fullmatch(part):  # (or itself: a message may say "resume=<run id>")
            parts.append(".+" if part in FREE_TEXT else rf"(?:\S+|{re.escape(part)})")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts))


def fragment(span: str) -> bool:
    return span.startswith("(") and span.endswith(")")


def messages(cell: str) -> list[str]:
    """The messages a message cell states (see the module's docstring)."""
    spans = SPAN.findall(cell)
    stated = [s for s in spans if ": " in s or fragment(s)]
    return stated if stated or cell.startswith("not an error") else spans


def says(span: str, line: str) -> bool:
    """Whether ``line`` (an answer) is the message ``span`` of the page."""
    regex = pattern(span)
    for text in {line, line.removeprefix(ERROR)}:
        if regex.search(text) if fragment(span) else regex.fullmatch(text):
            return True
    return False


def statuses(row: Row) -> set[int] | None:
    """The exit or HTTP statuses the row allows (None: not stated; empty: none, e.g. "—")."""
    if row.status is not None:
        return {int(n) for n in re.findall(r"\d+", SPAN.sub("", row.status))}
    stated = SECTION_STATUS[row.section]
    if stated is None:
        return None
    return {0} if row.message.startswith("not an error") else {stated}


# --- the answers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    """One answer: a line printed (or an exception's or HTTP answer's message) and its exit or
    HTTP status, where there is one."""

    line: str
    status: int | None = None


class Context:
    """What the runners share: folders, copies of the migrated store, the tiny data set, and
    tests/test_errors.py's outcomes (``cases()``, asked for last: another worker may still be
    running them)."""

    def __init__(
        self, folder: Path, migrated_db: Path, data_root: Path, cases: Callable[[], dict]
    ) -> None:
        self._folder, self.migrated_db, self.data_root = folder, migrated_db, data_root
        self._cases, self._numbers, self._once = cases, itertools.count(), {}

    def folder(self, name: str) -> Path:
        path = self._folder / f"{next(self._numbers)}-{name}"
        path.mkdir()
        return path

    def store(self, folder: Path) -> str:
        """The tracking URI of a copy of the migrated store in ``folder``/mlruns."""
        return copy_store(folder, self.migrated_db)["tracking_uri"]

    def cases(self) -> dict:
        return self.once(lambda _: self._cases(), "cases")

    def once(self, group: Callable[[Context], dict], key: str | None = None) -> dict:
        key = key or group.__name__
        if key not in self._once:
            self._once[key] = group(self)
        return self._once[key]


Runner = Callable[[Context], list[Said]]


def answers(
    result: subprocess.CompletedProcess,
    prefixes: tuple[str, ...] = (ERROR,),
    renamed: dict[str, str] | None = None,
) -> list[Said]:
    """A command's lines that start with one of ``prefixes``, with its exit status; ids and
    folders renamed as the page names them (``renamed``). Without such a line, its last line of
    error output, so that a failure shows what it said instead."""
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

    try:
        call()
    except DigitlabError as e:
        return Said(str(e))
    raise AssertionError(f"{call} raised nothing")


def command(
    module: str,
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    prefixes: tuple[str, ...] = (ERROR,),
    renamed: dict[str, str] | None = None,
) -> list[Said]:
    """``python -m module args``, forked warm: its lines starting with ``prefixes``."""
    env = {**os.environ, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    result = warm.run(module, *args, env=env, cwd=cwd, timeout=300)
    return answers(result, prefixes, renamed)


def case(name: str, root: str | None = None) -> Runner:
    """tests/test_errors.py's ``CASES[name]`` (or a locked-store case): its error line and exit
    status. ``root``: the page's name for the case's data root (e.g. /nowhere)."""

    def run(ctx: Context) -> list[Said]:
        outcome = ctx.cases()[name]
        result, store = outcome[0], outcome[-1]
        renamed = {str(store.parent.parent / "data"): root} if root else None
        return answers(result, renamed=renamed)

    run.shared = True
    run.__name__ = f"case[{name}]"
    return run


def part(group: Callable[[Context], dict], key: str) -> Runner:
    """One row's answers out of a runner that answers several rows at once."""

    def run(ctx: Context) -> list[Said]:
        return ctx.once(group)[key]

    run.__name__ = f"{group.__name__}[{key}]"
    return run


# --- data files ------------------------------------------------------------------------------


def _refused_open(path: Path):
    """Path.open failing for ``path`` as for a file its reader may not read (as chmod 000 does,
    except for root, who runs some of these tests)."""
    real = Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    return refuse


def download_fails(ctx: Context) -> list[Said]:
    """Every MNIST file missing; one mirror serves files of the wrong checksum, the other refuses
    connections."""
    from torchvision.datasets import MNIST

    from digitlab.data.sources import load_mnist

    served = ctx.folder("mirror")
    for name, _ in MNIST.resources:
        (served / name).write_bytes(b"not the file")
    handler = functools.partial(_Quiet, directory=str(served))
    with (
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as mirror,
        socket.socket() as closed,
    ):
        closed.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=mirror.serve_forever, daemon=True)
        thread.start()
        try:
            urls = [
                f"http://127.0.0.1:{mirror.server_address[1]}/",
                f"http://127.0.0.1:{closed.getsockname()[1]}/",
            ]
            root = ctx.folder("root")
            return [raised(lambda: load_mnist(root, download=True, mirrors=urls))]
        finally:
            mirror.shutdown()
            thread.join()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def idx_header_too_large(ctx: Context) -> list[Said]:
    from digitlab.data.idx import read_images

    folder, said = ctx.folder("idx"), []
    header = bytes([0, 0, 8, 3]) + np.array([2**31] * 3, ">u4").tobytes()
    plain = folder / "train-images-idx3-ubyte"
    plain.write_bytes(header + bytes(100))
    said.append(raised(lambda: read_images(plain)))
    packed = folder / "train-images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(header))
    said.append(raised(lambda: read_images(packed)))
    longer = folder / "t10k-images-idx3-ubyte.gz"
    longer.write_bytes(
        gzip.compress(
            bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">u4").tobytes() + bytes(2 * 28 * 28 + 100)
        )
    )
    said.append(raised(lambda: read_images(longer)))
    return said


def idx_unreadable(ctx: Context) -> list[Said]:
    from digitlab.data.idx import read_images

    folder = ctx.folder("idx")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(16)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", _refused_open(path))
        unreadable = raised(lambda: read_images(path))
    dir_path = ctx.folder("idx") / "train-images-idx3-ubyte.gz"
    dir_path.mkdir()
    return [unreadable, raised(lambda: read_images(dir_path))]


def _train_csv(ctx: Context) -> Path:
    """A fresh copy of the tiny Kaggle train.csv (CRLF line ends, as Kaggle's)."""
    return write_kaggle(ctx.folder("kaggle")) / "digit-recognizer" / "train.csv"


def _read_csv(path: Path) -> Said:
    from digitlab.data.kaggle import read_kaggle_csv

    return raised(lambda: read_kaggle_csv(path))


def kaggle_not_utf8(ctx: Context) -> list[Said]:
    latin = _train_csv(ctx)
    lines = latin.read_bytes().split(b"\r\n")
    lines[1] = b"\xe9" + lines[1][1:]
    latin.write_bytes(b"\r\n".join(lines))
    wide = _train_csv(ctx)
    wide.write_bytes(codecs.BOM_UTF16_LE + wide.read_text().encode("utf-16-le"))
    return [_read_csv(latin), _read_csv(wide)]


def kaggle_binary(ctx: Context) -> list[Said]:
    path = _train_csv(ctx)
    path.write_bytes(bytes(1 << 20))
    return [_read_csv(path)]


def kaggle_long_line(ctx: Context) -> list[Said]:
    path = _train_csv(ctx)
    header = path.read_bytes().split(b"\r\n")[0]
    path.write_bytes(header + b"\r\n" + b"1," * 10_000 + b"\r\n")
    return [_read_csv(path)]


def kaggle_unreadable(ctx: Context) -> list[Said]:
    path = _train_csv(ctx)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", _refused_open(path))
        unreadable = _read_csv(path)
    folder = _train_csv(ctx)
    folder.unlink()
    folder.mkdir()
    return [unreadable, _read_csv(folder)]


def kaggle_header_only(ctx: Context) -> list[Said]:
    path = _train_csv(ctx)
    path.write_bytes(path.read_bytes().split(b"\r\n")[0] + b"\r\n")
    return [_read_csv(path)]


def kaggle_one_row(ctx: Context) -> list[Said]:
    from digitlab.data.sources import load_kaggle

    path = _train_csv(ctx)
    path.write_bytes(b"\r\n".join(path.read_bytes().split(b"\r\n")[:2]) + b"\r\n")
    return [raised(lambda: load_kaggle(path.parent.parent))]


def kaggle_lf_and_bom(ctx: Context) -> list[Said]:
    """Not an error: LF line ends and a UTF-8 byte-order mark read as Kaggle's own file does."""
    from digitlab.data.kaggle import read_kaggle_csv

    kaggle = _train_csv(ctx)
    lf, bom = _train_csv(ctx), _train_csv(ctx)
    lf.write_bytes(kaggle.read_bytes().replace(b"\r\n", b"\n"))
    bom.write_bytes(codecs.BOM_UTF8 + kaggle.read_bytes())
    images, labels = read_kaggle_csv(kaggle)
    for other in (lf, bom):
        other_images, other_labels = read_kaggle_csv(other)
        assert (other_images == images).all() and (other_labels == labels).all(), other
    return []


# --- digitlab-predict, -register and -serve --------------------------------------------------


def _checkpoint(path: Path, *overrides: str) -> Path:
    """A checkpoint as digitlab writes one (an untrained MLP and its run config), without
    training."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import digitlab

    cfg = digitlab.compose("model=mlp", "data.val_size=40", *overrides)
    net = instantiate(cfg.model)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)},
        },
        path,
    )
    return path


def crafted_checkpoint(ctx: Context) -> list[Said]:
    """A checkpoint whose saved config names a module of its own."""
    import torch

    folder = ctx.folder("crafted")
    good = torch.load(_checkpoint(folder / "good.ckpt"), weights_only=True)
    good["hyper_parameters"]["config"]["model"]["_target_"] = "crafted_marker.build"
    torch.save(good, folder / "crafted.ckpt")
    return command(
        "digitlab.cli.predict",
        "--checkpoint",
        "crafted.ckpt",
        "--data",
        "mnist",
        "--root",
        str(ctx.data_root),
        cwd=folder,
    )


def recipe_checkpoint(ctx: Context) -> list[Said]:
    """A checkpoint whose saved recipe holds nested code where a plain value belongs."""
    import torch

    folder = ctx.folder("recipe")
    good = torch.load(_checkpoint(folder / "good.ckpt"), weights_only=True)
    nested = {"_target_": "digitlab.data.sources.load_idx", "folder": "/tmp"}
    good["hyper_parameters"]["config"]["model"]["activation"] = nested
    torch.save(good, folder / "crafted.ckpt")
    return command(
        "digitlab.cli.predict",
        "--checkpoint",
        "crafted.ckpt",
        "--data",
        "mnist",
        "--root",
        str(ctx.data_root),
        cwd=folder,
    )


def _run(
    client,
    experiment: str,
    name: str,
    status: str = "FINISHED",
    checkpoint: Path | None = None,
    **tags: str,
) -> str:
    """A run made directly in the store (no training), with ``checkpoint`` logged as its
    ``checkpoints/best.ckpt``."""
    run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    if checkpoint is not None:
        client.log_artifact(run_id, str(checkpoint), "checkpoints")
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _experiment(client, folder: Path) -> str:
    return client.create_experiment("digitlab", artifact_location=str(folder / "artifacts"))


def ensembles(ctx: Context) -> dict[str, list[Said]]:
    """digitlab-predict on runs made in a store: A and D with a checkpoint (Kaggle's train.csv,
    held-out rows cut with split seeds 1 and 2), B and C without one, and a sweep's parent whose
    only child still runs."""
    from mlflow.tracking import MlflowClient

    folder = ctx.folder("ensembles")
    uri = ctx.store(folder)
    client = MlflowClient(uri)
    experiment = _experiment(client, folder / "mlruns")
    kaggle = ["data=kaggle", f"data.root={ctx.data_root}", "data.test_size=40"]
    a = _run(
        client,
        experiment,
        "a",
        checkpoint=_checkpoint(ctx.folder("a") / "best.ckpt", *kaggle, "data.split_seed=1"),
    )
    d = _run(
        client,
        experiment,
        "d",
        checkpoint=_checkpoint(ctx.folder("d") / "best.ckpt", *kaggle, "data.split_seed=2"),
    )
    b, c = _run(client, experiment, "b"), _run(client, experiment, "c")
    parent = _run(client, experiment, "sweep", status="RUNNING")
    _run(client, experiment, "job", status="RUNNING", **{"mlflow.parentRunId": parent})
    names = {a: "A", b: "B", c: "C"}

    def predict(*args: str, renamed=names, **kwargs) -> list[Said]:
        return command(
            "digitlab.cli.predict",
            *args,
            "--tracking-uri",
            uri,
            "--out",
            str(ctx.folder("out") / "p.npy"),
            renamed=renamed,
            **kwargs,
        )

    mnist = ["--data", "mnist", "--root", str(ctx.data_root)]
    return {
        "missing": predict("--run", a, b, *mnist),
        "skip": predict(
            "--run", a, b, *mnist, "--skip-missing", prefixes=("digitlab: skipped", ERROR)
        ),
        "holdout": predict(
            "--run",
            a,
            d,
            "--data",
            "holdout",
            "--root",
            str(ctx.data_root),
            renamed={a: "A", d: "B"},
        ),
        "none left": predict("--run", b, c, *mnist, "--skip-missing"),
        "sweep": predict("--run", parent, *mnist),
    }


def registrations(ctx: Context) -> dict[str, list[Said]]:
    """digitlab-register on runs made in a store: one scored and one without test/acc, each
    with a logged model (made without training), and one without a model."""
    from mlflow.tracking import MlflowClient

    folder = ctx.folder("registry")
    uri = ctx.store(folder)
    client = MlflowClient(uri)
    experiment = _experiment(client, folder / "mlruns")
    scored, unscored, modelless = (
        _run(client, experiment, name) for name in ("scored", "unscored", "modelless")
    )
    client.log_metric(scored, "test/acc", 0.9)
    for run_id in (scored, unscored):
        client.create_logged_model(experiment, name="model", source_run_id=run_id)

    def register(run_id: str) -> list[Said]:
        return command(
            "digitlab.cli.register",
            run_id,
            "--name",
            "digits",
            "--tracking-uri",
            uri,
            prefixes=("digitlab: ",),
        )

    return {
        "no model": register(modelless),
        "unknown": register("0123456789abcdef0123456789abcdef"),
        "first": register(scored),
        "no test/acc": register(unscored),
        "again": register(scored),
    }


def serving_without_models(ctx: Context) -> list[Said]:
    return command("digitlab.cli.serve", "--tracking-uri", ctx.store(ctx.folder("serve")))


def serving_a_gone_run(ctx: Context) -> list[Said]:
    """A bare digitlab-serve on a store whose only logged model's run row was deleted."""
    from mlflow.tracking import MlflowClient

    folder = ctx.folder("gone")
    uri = ctx.store(folder)
    client = MlflowClient(uri)
    experiment = _experiment(client, folder / "mlruns")
    run_id = _run(client, experiment, "gone")
    client.create_logged_model(experiment, name="model", source_run_id=run_id)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM runs WHERE run_uuid = ?", (run_id,))
    return command("digitlab.cli.serve", "--tracking-uri", uri)


def serving_a_missing_model(ctx: Context) -> list[Said]:
    return command(
        "digitlab.cli.serve",
        "--model",
        "models:/nope@best",
        "--tracking-uri",
        ctx.store(ctx.folder("serve")),
    )


class StubModel:
    """A served model's predict(): the pixels checked as the real one checks them."""

    def predict(self, data):
        from digitlab.serving.model import as_pixels

        n = len(as_pixels(data))
        return {"probabilities": np.full((n, 10), 0.1, np.float32), "digit": np.zeros(n, int)}


def serving(ctx: Context) -> dict[str, list[Said]]:
    """digitlab-serve's main in this process, its model loaded by a stub (a model's file is not
    the point here) or failing as ``load`` says: the answers to a taken port, an address of
    another machine, a port below 1024 (made to fail as for a user without root, where root
    runs this) and a model's file that cannot be copied."""
    from digitlab.cli import serve
    from digitlab.serving import server

    uri = ctx.store(ctx.folder("serve"))
    model = f"runs:/{uuid.uuid4().hex}/model"
    make_server = server.make_server

    def bind_only(*args, **kwargs):  # never serve_forever: a bind that works is the test's fault
        make_server(*args, **kwargs).server_close()
        raise AssertionError(f"digitlab-serve could listen on {args[2:4]} here: no error to show")

    def main(*args: str, load: Callable | None = None, bind: Callable = bind_only) -> list[Said]:
        err = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
            patch.setattr(
                "digitlab.serving.models.ModelCache.get", load or (lambda self, uri: StubModel())
            )
            patch.setattr(server, "make_server", bind)
            patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            with pytest.raises(SystemExit) as exit_:
                serve.main(["--model", model, "--tracking-uri", uri, *args])
        return [
            Said(line, exit_.value.code)
            for line in err.getvalue().splitlines()
            if line.startswith(ERROR)
        ]

    def full(self, uri: str):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/digitlab-serve-x/best.ckpt")

    def privileged(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = {
            "taken": [
                Said(s.line.replace(f":{port} ", ":5001 "), s.status)
                for s in main("--port", str(port))
            ]
        }
    said["address"] = main("--host", "192.0.2.1", "--port", "5001")  # TEST-NET: no one's
    said["privileged"] = main("--port", "80", bind=privileged if os.geteuid() == 0 else bind_only)
    said["unreadable"] = main("--port", "0", load=full)
    return said


def damaged_store(ctx: Context) -> list[Said]:
    """``digitlab`` on a store whose pages are overwritten in the middle."""
    from test_store_damage import damage_pages, make_store

    folder = ctx.folder("damaged")
    db, _ = make_store(folder, ctx.migrated_db)
    damage_pages(db)
    args, env = cli_args([], ctx.data_root, db, folder / "out")
    return answers(warm.run("digitlab", *args, env=env, timeout=300))


def store_write_refused(code: int) -> Runner:
    """The test write a store gets before an experiment takes a run, refused with ``code`` (as
    a read-only mount or a full disk refuses it: tests/test_store_damage.py mounts real ones)."""

    def run(ctx: Context) -> list[Said]:
        from digitlab.tracking import store

        folder = ctx.folder("store")
        client = store.open_client(ctx.store(folder))

        def refused(where: Path) -> None:
            raise OSError(code, os.strerror(code))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "_probe_write", refused)
            return [
                raised(
                    lambda: store.get_or_create_experiment(
                        client, "digitlab", str(folder / "mlruns" / "artifacts")
                    )
                )
            ]

    run.__name__ = f"store_write_refused[{errno.errorcode[code]}]"
    return run


# --- digitlab-serve's answers ----------------------------------------------------------------


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def _raw(port: int, data: bytes, close: bool = True) -> tuple[int, dict, str]:
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
    if not headers.get("content-type", "").startswith("application/json"):  # uvicorn's own
        return int(status_line.split()[1]), headers, body.decode()
    return int(status_line.split()[1]), headers, json.loads(body)["message"]


def _request(
    path: str,
    body: bytes = b"",
    method: str = "POST",
    host: str = "127.0.0.1",
    kind: str | None = "application/json",
    length: int | bool = True,
) -> bytes:
    """An HTTP request's bytes; ``length``: the Content-Length to state (True: the body's,
    False: none)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if kind:
        head += f"Content-Type: {kind}\r\n"
    if length is not False:
        head += f"Content-Length: {len(body) if length is True else length}\r\n"
    return (head + "\r\n").encode() + body


def _png(pixels: np.ndarray | None) -> str:
    from PIL import Image

    data = io.BytesIO()
    if pixels is None:
        return "data:image/png;base64," + base64.b64encode(b"\x89PNG not one").decode()
    Image.fromarray(pixels).save(data, format="PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def served(ctx: Context) -> dict[str, list[Said]]:
    """Requests to the server of digitlab-serve, on a free port in this process: its default
    model a stub that checks pixels as the real one does, ``?model=boom`` a store that fails,
    any other model URI the store's (an empty copy of the migrated store)."""
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    from digitlab.serving.models import ModelCache
    from digitlab.serving.server import MAX_BODY, make_server

    uri = ctx.store(ctx.folder("served"))
    cache = ModelCache(uri)

    class Models:
        def get(self, model: str):
            if model == "models:/stub@best":
                return StubModel()
            if model == "boom":
                raise RuntimeError("the store failed")
            return cache.get(model)

    server = make_server(MlflowClient(uri), "models:/stub@best", models=Models())
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    inputs = functools.partial(_request, "/invocations")
    pixels = [[0] * 784]
    requests = {
        "shape": [inputs(_json({"inputs": [[0] * 783]}))],
        "not numbers": [
            inputs(_json({"inputs": [["a"] * 784]})),
            inputs(_json({"inputs": [[True] * 784]})),
        ],
        "ragged": [inputs(_json({"inputs": [[0] * 784, [0] * 3]}))],
        "range": [
            inputs(_json({"inputs": [[0] * 783 + [256]]})),
            inputs(_json({"inputs": [[float("nan")] * 784]})),
        ],
        "count": [
            inputs(_json({"inputs": []})),
            inputs(b'{"inputs": [' + b",".join([b"[" + b"0," * 783 + b"0]"] * 10_001) + b"]}"),
        ],
        "not json": [inputs(b"not json")],
        "no pixels": [inputs(_json({"pixel": pixels}))],
        "nested": [inputs(b"[" * 100_000)],
        "json budget": [inputs(b"[" + b"[]" * 300_000 + b"]")],
        "no length": [inputs(b"", length=False)],
        "too large": [inputs(b"", length=MAX_BODY + 1)],
        "not json type": [inputs(_json({"inputs": pixels}), kind="text/plain")],
        "host": [_request("/", method="GET", host="evil.example", kind=None, length=False)],
        "method": [_request("/", method="PUT", kind=None, length=False)],
        "malformed": [b"NONSENSE\r\n\r\n"],
        "failure": [_request("/invocations?model=boom", _json({"inputs": pixels}))],
        "unknown model": [
            _request(f"/invocations?model={model}", _json({"inputs": pixels}))
            for model in ("models:/nope@best", "/etc/passwd")
        ],
        "drawing": [
            _request("/draw", _json({"png": _png(np.zeros((28, 28), np.uint8))})),
            _request("/draw", _json({"png": _png(None)})),
        ],
        "path": [_request("/x", method="GET", kind=None, length=False)],
    }
    said: dict[str, list[Said]] = {}
    # ModelCache points MLflow's fluent API at the store it loads from: put it back after.
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(1) as pool:
        patch.setattr(utils, "_tracking_uri", utils._tracking_uri)
        # (set, then removed if it was not set: either way undone as it was)
        patch.setenv("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
        if not os.environ["MLFLOW_TRACKING_URI"]:
            patch.delenv("MLFLOW_TRACKING_URI")
        thread.start()
        try:
            # A body that stops arriving waits out the server's 5 s: meanwhile the others.
            stalled = pool.submit(_raw, port, inputs(b'{"inp', length=100), False)
            for key, sent in requests.items():
                said[key] = [
                    Said(message, status)
                    for status, _, message in (_raw(port, data) for data in sent)
                ]
            status, _, message = stalled.result()
            said["stalled"] = [Said(message, status)]
            status, headers, message = _raw(port, requests["method"][0])
            assert headers.get("allow") == "GET, HEAD, POST", headers
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    said["host"] = [Said(s.line.replace(f":{port}/", ":5001/"), s.status) for s in said["host"]]
    return said


# --- the Python API --------------------------------------------------------------------------


def python_api(ctx: Context) -> dict[str, list[Said]]:
    """The functions of the table, in this process, on an empty copy of the migrated store."""
    from hydra import initialize_config_dir
    from mlflow.tracking import MlflowClient

    import digitlab
    from digitlab.api.model import Model
    from digitlab.config import CONF_DIR

    folder = ctx.folder("api")
    uri = ctx.store(folder)
    unknown = "0123456789abcdef0123456789abcdef"
    images = (np.arange(2 * 28 * 28) % 256).reshape(2, 28, 28).astype(np.uint8)
    model = Model(net=None, config={})

    def in_another_context() -> None:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            digitlab.compose("model=mlp")

    # A run holding the files a default run logs (lenet, pictures on), as empty files.
    client = MlflowClient(uri)
    logged = ctx.folder("logged")
    for name in DEFAULT_RUN_ARTIFACTS:
        (logged / name).parent.mkdir(parents=True, exist_ok=True)
        (logged / name).touch()
    run_id = _run(client, _experiment(client, folder / "mlruns"), "lenet-mnist-sgd-s42")
    client.log_artifacts(run_id, str(logged))

    def on_a_busy_port() -> None:
        with socket.socket() as held:  # another program serving on the port asked for
            held.bind(("127.0.0.1", 0))
            held.listen()
            digitlab.ui(tracking_uri=uri, port=held.getsockname()[1])

    return {
        "option": [raised(lambda: digitlab.compose("model=resnet"))],
        "key": [
            raised(lambda: digitlab.compose("optimizer.lrr=1")),
            raised(lambda: digitlab.compose("optimizer.lr=0.1,0.2")),
        ],
        "flag": [raised(lambda: digitlab.compose("-m", "model=mlp"))],
        "context": [raised(in_another_context)],
        "filter": [raised(lambda: digitlab.runs(tracking_uri=uri, colour="red"))],
        "parse": [
            raised(
                lambda: digitlab.runs(tracking_uri=uri, filter_string="params.optimizer.lr = 0.1")
            )
        ],
        "shape": [raised(lambda: model.predict(np.zeros((2, 32, 32))))],
        "values": [raised(lambda: model.predict(images / 255 - 0.5))],
        "run": [
            raised(lambda: digitlab.load(unknown, tracking_uri=uri)),
            raised(lambda: digitlab.show(unknown, tracking_uri=uri)),
        ],
        "artifact": [raised(lambda: digitlab.show(run_id, "nothing/*", tracking_uri=uri))],
        "predict": [raised(lambda: digitlab.predict(data="mnist"))],
        "store": [
            raised(
                lambda: digitlab.ui(
                    tracking_uri=f"sqlite:///{ctx.folder('nothing')}/mlruns/mlflow.db"
                )
            )
        ],
        "port": [raised(on_a_busy_port)],
    }


# What a run of the default config logs (digitlab.show lists them), e.g. under lenet-mnist-sgd.
DEFAULT_RUN_ARTIFACTS = [
    "checkpoints/best.ckpt",
    "config.yaml",
    "figures/data/label_histogram.png",
    "figures/data/samples_test.png",
    "figures/data/samples_train.png",
    "figures/data/samples_val.png",
    "figures/filters/conv1_final.png",
    "figures/filters/conv1_init.png",
    "figures/filters/conv1_stats_final.json",
    "figures/filters/conv1_stats_init.json",
    "figures/filters/conv2_final.png",
    "figures/filters/conv2_init.png",
    "figures/filters/conv2_stats_final.json",
    "figures/filters/conv2_stats_init.json",
    "figures/predictions/confident_mistakes.png",
    "figures/predictions/confusion_matrix.png",
    "figures/predictions/per_class_accuracy.png",
    "figures/predictions/probabilities.png",
]


# --- a run's ending --------------------------------------------------------------------------


@contextlib.contextmanager
def _tracked(ctx: Context, last: bool = True):
    """A TrackedRun of a store copy, its checkpoint folder holding ``last.ckpt`` if ``last``;
    yields (the run, {"said": the line the command prints as it ends, and its exit status}).
    """
    from mlflow.tracking import MlflowClient

    from digitlab.errors import DigitlabError
    from digitlab.tracking.run import TrackedRun

    folder = ctx.folder("run")
    client = MlflowClient(ctx.store(folder))
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    if last:
        (checkpoints / "last.ckpt").write_bytes(b"epoch 1's weights")
    ended: dict[str, Said] = {}
    try:
        with TrackedRun(
            client,
            _experiment(client, folder / "mlruns"),
            {"seed": 42},
            checkpoints,
            "mlp-mnist-sgd-s42",
        ) as run:
            yield run, ended
    except DigitlabError as e:  # as digitlab.cli.train prints it
        ended["said"] = Said(f"digitlab: {e.kind}: {e}", e.exit_code)


def _ended(ctx: Context, body: Callable, last: bool = True) -> list[Said]:
    with _tracked(ctx, last) as (run, ended):
        body(run)
    return [ended["said"]]


def _interrupt(signum: int) -> Callable:
    def body(run) -> None:  # the signal, then Lightning's stop at the next batch
        from digitlab.tracking.logger import StopOnSignal

        os.kill(os.getpid(), signum)
        StopOnSignal().on_train_batch_start(None, None, None, 0)

    return body


def non_finite_loss(ctx: Context) -> list[Said]:
    import torch

    from digitlab.callbacks.guards import StopOnNonFiniteLoss

    trainer = SimpleNamespace(global_step=10, current_epoch=1, num_training_batches=10)
    return _ended(
        ctx,
        lambda run: StopOnNonFiniteLoss().on_train_batch_end(
            trainer, None, {"loss": torch.tensor(float("nan"))}, None, 9
        ),
    )


def ctrl_c(ctx: Context) -> list[Said]:
    return _ended(ctx, _interrupt(signal.SIGINT))


def sigterm(ctx: Context) -> list[Said]:
    return _ended(ctx, _interrupt(signal.SIGTERM))


def ctrl_c_before_a_checkpoint(ctx: Context) -> list[Said]:
    return _ended(ctx, _interrupt(signal.SIGINT), last=False)


def ctrl_c_as_the_run_ends(ctx: Context) -> list[Said]:
    def body(run) -> None:  # the signal came once no batch was left to stop at
        os.kill(os.getpid(), signal.SIGINT)

    return _ended(ctx, body)


def disk_full(ctx: Context) -> list[Said]:
    from lightning.fabric.plugins.io import torch_io

    from digitlab.training.checkpoint_io import AtomicCheckpointIO

    def full(checkpoint, path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_io, "_atomic_save", full)
        return _ended(
            ctx,
            lambda run: AtomicCheckpointIO().save_checkpoint(
                {"epoch": 1}, run.checkpoint_dir / "last.ckpt"
            ),
        )


def artifacts_unwritable(ctx: Context) -> list[Said]:
    """The artifact folder refuses files once the run began (as tests/test_interrupt.py
    makes it)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def refuse(self, local_file, artifact_path=None) -> None:
        name = Path(local_file).name
        raise PermissionError(
            errno.EACCES, os.strerror(errno.EACCES), f"{self.artifact_dir}/{name}"
        )

    with pytest.MonkeyPatch.context() as patch, _tracked(ctx) as (run, ended):
        patch.setattr(LocalArtifactRepository, "log_artifact", refuse)
        best = run.checkpoint_dir / "best.ckpt"
        best.write_bytes(b"the best weights")
        run.log_checkpoint(best)
    return [ended["said"]]


def killed_outright(ctx: Context) -> list[Said]:
    """A RUNNING run whose owner process is gone, found by the next command on the store."""
    from mlflow.tracking import MlflowClient

    from digitlab.tracking.owners import HOST_TAG, PID_TAG, reap_dead_owners
    from digitlab.tracking.run import CHECKPOINT_DIR_TAG

    folder = ctx.folder("killed")
    client = MlflowClient(ctx.store(folder))
    experiment = _experiment(client, folder / "mlruns")
    (folder / "last.ckpt").write_bytes(b"weights")
    dead = subprocess.Popen(["true"])
    dead.wait()
    _run(
        client,
        experiment,
        "mlp-mnist-sgd-s42",
        status="RUNNING",
        **{HOST_TAG: socket.gethostname(), PID_TAG: str(dead.pid), CHECKPOINT_DIR_TAG: str(folder)},
    )
    return [Said(line) for line in reap_dead_owners(client, experiment)]


SECOND_SIGNAL = """
import os, signal, sys, time
{setup}
try:  # the first: recorded (a run stops at its next batch) or raised (a sweep's process)
    os.kill(os.getpid(), signal.{signal})
except KeyboardInterrupt:
    pass
os.kill(os.getpid(), signal.{signal})
time.sleep(10)
"""


def _second_signal(setup: str, signum: str) -> list[Said]:
    result = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL.format(setup=setup, signal=signum)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return answers(result, ("digitlab: interrupted: ",))


def second_ctrl_c(ctx: Context) -> list[Said]:
    return _second_signal(
        "from digitlab.tracking.run import STOP\nSTOP.__enter__()",
        "SIGINT",
    )


def second_signal_in_a_sweep(ctx: Context) -> list[Said]:
    return _second_signal(
        "from digitlab.tracking import sweep\nsweep._observe_interrupts()", "SIGTERM"
    )


def sweep_interrupted(ctx: Context) -> list[Said]:
    """The line a sweep's own process prints once Ctrl-C stopped its parallel jobs."""
    from digitlab.tracking import sweep

    class Stopped:  # the sweep running here, whose jobs the launcher stopped
        parent_id = uuid.uuid4().hex

        def _abandon(self) -> list[str]:
            return [uuid.uuid4().hex]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep, "_active", Stopped())
        patch.setattr(sweep, "_interrupted", None)
        line, status = sweep.end_interrupted_sweep()
    return [Said(f"digitlab: interrupted: {line}", status)]


# --- commands of tests/test_errors.py's kind that leave a run --------------------------------


def optuna_storage(ctx: Context) -> list[Said]:
    """A sweep's parent run is made before the sweeper opens its storage: it ends FAILED, so
    this is not one of tests/test_errors.py's cases, which leave no run."""
    folder = ctx.folder("optuna")
    store = Path(ctx.store(folder).removeprefix("sqlite:///"))
    args, env = cli_args(
        ["-m", "experiment=search", "hydra.sweeper.storage=postgresql://nowhere/db"],
        ctx.data_root,
        store,
        folder / "out",
    )
    return answers(warm.run("digitlab", *args, env=env, timeout=300))


KWARGS_NET = '''from digitlab.models import MLP


class Net(MLP):
    """Takes what MLP takes, as **settings: its source does not tell which."""

    def __init__(self, **settings):
        super().__init__(**settings)
'''


def added_key_built(ctx: Context) -> list[Said]:
    """An added key of a network whose arguments only its build tells (a user's, trusted)."""
    folder = ctx.folder("kwargs")
    (folder / "kwnet.py").write_text(KWARGS_NET)
    store = Path(ctx.store(folder).removeprefix("sqlite:///"))
    args, env = cli_args(
        ["model=mlp", "model._target_=kwnet.Net", "trusted_targets=[kwnet]", "+model.widthh=3"],
        ctx.data_root,
        store,
        folder / "out",
    )
    return answers(warm.run("digitlab", *args, env={**env, "PYTHONPATH": str(folder)}, timeout=300))


# --- the links -------------------------------------------------------------------------------


def busy(ctx: Context) -> list[Said]:
    """A server whose cache allows one load at once, a slow one under way: the answer to a
    request for another model not loaded yet."""
    from digitlab.serving.models import ModelCache
    from digitlab.serving.server import make_server

    loading, release = threading.Event(), threading.Event()

    def load(uri: str) -> StubModel:  # a download taking its time
        loading.set()
        release.wait(60)
        return StubModel()

    cache = ModelCache("sqlite:///unused.db", loading=1, load=load)
    server = make_server(SimpleNamespace(tracking_uri="sqlite:///unused.db"), "m", models=cache)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    body = _json({"inputs": [[0] * 784]})

    def ask_slow() -> None:  # answered 200 once the load ends
        with socket.create_connection(("127.0.0.1", port), timeout=90) as s:
            s.sendall(_request("/invocations?model=models:/slow/1", body))
            while s.recv(65536):
                pass

    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(ask_slow)
            try:
                assert loading.wait(30), "the slow load never began"
                status, headers, message = _raw(
                    port, _request("/invocations?model=models:/other/1", body)
                )
                assert headers.get("retry-after") == "5", headers
            finally:
                release.set()
            slow.result()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return [Said(message, status)]


LINKS: dict[str, dict[str, Runner | tuple[Runner, ...]]] = {
    "Bad input": {
        "data folder missing": case("data folder missing", root="/nowhere"),
        "Kaggle folder missing": case("kaggle folder missing"),
        "one IDX file missing": case("one IDX file missing"),
        "EMNIST files missing": case("emnist files missing"),
        "the same with `data.source.download=true`, offline": case("emnist download on"),
        "download fails (offline, 404, wrong checksum)": (case("download fails"), download_fails),
        "data root that does not exist, download on": case("data root that does not exist"),
        "truncated `.gz`": case("truncated gz"),
        "IDX header larger than its file": idx_header_too_large,
        "IDX file unreadable, or a folder": idx_unreadable,
        "wrong IDX magic number": case("wrong IDX magic"),
        "image/label count mismatch": case("image/label count mismatch"),
        "image size not 28×28": case("image size not 28x28"),
        "Kaggle CSV, wrong header": case("kaggle wrong header"),
        "Kaggle CSV, short row": case("kaggle short row"),
        "Kaggle CSV, non-numeric cell": case("kaggle non-numeric cell"),
        "Kaggle CSV, pixel outside 0–255": case("kaggle pixel outside 0-255"),
        "Kaggle CSV, label outside 0–9": case("kaggle label outside 0-9"),
        "Kaggle CSV not UTF-8 (latin-1, UTF-16)": kaggle_not_utf8,
        "Kaggle CSV that is binary (a 1 GB file of NUL bytes)": kaggle_binary,
        "Kaggle CSV line longer than any row": kaggle_long_line,
        "Kaggle CSV unreadable, or a folder": kaggle_unreadable,
        "Kaggle CSV, header only": kaggle_header_only,
        "Kaggle CSV, one row": kaggle_one_row,
        "Kaggle CSV with LF line ends, or a UTF-8 byte-order mark": kaggle_lf_and_bom,
        "`test.csv` where `train.csv` is needed": case("test.csv given for training"),
        "wrong value type (`optimizer.lr=abc`)": case("wrong value type (lr)"),
        "wrong value type (`data.batch_size=1.5`)": case("wrong value type (batch size)"),
        "layer widths not a list": case("widths not a list"),
        "a zero-width layer": (case("zero-width layer"), case("kernel size 0")),
        "an infinite or NaN number": (
            case("infinite learning rate"),
            case("NaN in the data settings"),
        ),
        "seed outside numpy's and torch's range": (
            case("seed below 0"),
            case("seed above 2**32 - 1"),
        ),
        "no devices": case("no devices"),
        "negative learning rate": case("negative lr"),
        "batch size 0": case("batch size 0"),
        "several optimizer steps per call set to 0": case("steps per call 0"),
        "gradient accumulation with several optimizer steps per call": case(
            "gradient accumulation"
        ),
        "validation fraction outside (0, 1)": case("val fraction outside (0, 1)"),
        "validation holdout as large as the data": case("validation holdout as large as the data"),
        "a picture count that cannot work": case("bad figures value"),
        "Apple's MPS on another machine": case("mps requested on Linux"),
        "corrupt MLflow store": case("corrupt MLflow store"),
        "damaged MLflow store": damaged_store,
        "read-only MLflow store folder": store_write_refused(errno.EROFS),
        "disk full under the MLflow store": store_write_refused(errno.ENOSPC),
        "MLflow store locked by another program": case(LOCKED),
        "MLflow store locked by another program while a run trains": case(LOCKED_MID_RUN),
        "cross-validation folds below 2": case("cross-validation folds below 2"),
        "more folds than training rows": case("more folds than training rows"),
        "Optuna storage unreachable or malformed": optuna_storage,
        "unreachable tracking server": case("unreachable tracking URI"),
        "a config naming code to run": case("config naming code to run"),
        "a checkpoint whose saved config names code outside the allow-list": crafted_checkpoint,
        "a checkpoint whose saved recipe is not plain data": recipe_checkpoint,
        "unknown scheduler interval": case("unknown scheduler interval"),
        "a trainer setting Lightning rejects": case("trainer setting Lightning rejects"),
        "GPU requested, none present": case("gpu without GPU"),
        "corrupt checkpoint": case("corrupt checkpoint"),
        "checkpoint of another architecture": case("checkpoint of another architecture"),
        "checkpoint holding pickled objects": case("checkpoint holding pickled objects"),
        "unknown run to resume": case("unknown run id to resume"),
        "registering a run that logged no model": part(registrations, "no model"),
        "registering an unknown run": part(registrations, "unknown"),
        "registering a run that has no `test/acc`": part(registrations, "no test/acc"),
        "registering a run again": part(registrations, "again"),
        "serving a store without models": serving_without_models,
        "serving a model that is not there": serving_a_missing_model,
        "port taken": part(serving, "taken"),
        "an address not of this machine": part(serving, "address"),
        "a port below 1024 without root": part(serving, "privileged"),
        "serving a store whose newest logged model lost its run": serving_a_gone_run,
        "a model's file unreadable, or no room to copy it": part(serving, "unreadable"),
        "an ensemble member whose run or checkpoint is missing or refused": part(
            ensembles, "missing"
        ),
        "the same with `--skip-missing`": part(ensembles, "skip"),
        "members that held out different rows": part(ensembles, "holdout"),
        "every member missing or refused": part(ensembles, "none left"),
        "a sweep's parent without a finished child": part(ensembles, "sweep"),
        # The words of the command line
        "unknown option of a group": case("unknown config option"),
        "misspelt preset (an optional group)": case("misspelt preset"),
        "an option in a sweep": case("unknown option in a sweep"),
        "unknown key": case("misspelt key"),
        "a key one option of a sweep lacks": case("key one option of a sweep lacks"),
        "an added key the class does not take": (case("unknown key added with +"), added_key_built),
        "an added key that is there": case("added key that is there"),
        "a group set to null": case("group set to null"),
        "a sweep without `-m`": case("sweep without -m"),
        "an override Hydra cannot read": case("override Hydra cannot read"),
        "an override written as a flag": case("override written as a flag"),
        "a key of a nested node, given alone": case("key of a nested node given alone"),
        "`--cfg` with `-m`": case("--cfg with -m"),
        "output folder that cannot be written": (
            case("output folder not writable"),
            case("output folder under a file"),
        ),
    },
    "Requests to `digitlab-serve`": {
        "pixels of another shape": part(served, "shape"),
        "pixels that are not numbers (strings, booleans)": part(served, "not numbers"),
        "ragged lists": part(served, "ragged"),
        "values outside 0..255, NaN": part(served, "range"),
        "no images, or more than 10 000": part(served, "count"),
        "body not JSON": part(served, "not json"),
        "JSON without pixels": part(served, "no pixels"),
        "more JSON values, lists or strings than pixels of 10 000 images need (counted on the "
        "body's bytes, before it is parsed)": part(served, "json budget"),
        "body nested deeper than Python's recursion limit (about 1 000 levels)": part(
            served, "nested"
        ),
        "no Content-Length": part(served, "no length"),
        "body over 64 MiB (checked on Content-Length, before reading)": part(served, "too large"),
        "body not sent as `application/json` (a `charset` is fine)": part(served, "not json type"),
        "body stops arriving (5 s without data, or 60 s in all)": part(served, "stalled"),
        "Host not 127.0.0.1, localhost, ::1 or an allowed name (server bound to loopback)": part(
            served, "host"
        ),
        "a method other than GET, HEAD, POST": part(served, "method"),
        "a request that is not HTTP/1.1 (a malformed request line)": part(served, "malformed"),
        "a failure of the server itself (a bug, a store that fails)": part(served, "failure"),
        "a model not loaded yet while 4 requests wait on model loads (`--any-model`)": busy,
        "unknown model, or not a model URI": part(served, "unknown model"),
        "a drawing that is empty or not a PNG": part(served, "drawing"),
        "unknown path": part(served, "path"),
    },
    "From Python": {
        "unknown option of a group": part(python_api, "option"),
        "unknown key, sweep syntax": part(python_api, "key"),
        "a command-line flag": part(python_api, "flag"),
        "another Hydra context open": part(python_api, "context"),
        "unknown filter": part(python_api, "filter"),
        "a filter MLflow cannot parse": part(python_api, "parse"),
        "images of another shape": part(python_api, "shape"),
        "pixel values outside 0–255": part(python_api, "values"),
        "unknown run": part(python_api, "run"),
        "no artifact matches": part(python_api, "artifact"),
        "nothing to predict with": part(python_api, "predict"),
        "no store yet": part(python_api, "store"),
        "port taken": part(python_api, "port"),
    },
    "During training": {
        "loss becomes NaN or inf": non_finite_loss,
        "Ctrl-C (SIGINT)": ctrl_c,
        "SIGTERM": sigterm,
        "Ctrl-C before the first epoch ends": ctrl_c_before_a_checkpoint,
        "Ctrl-C during the test pass": ctrl_c,
        "Ctrl-C while the finished run is being recorded": ctrl_c_as_the_run_ends,
        "a second Ctrl-C (or SIGTERM) while the first is honoured": second_ctrl_c,
        "Ctrl-C or a failing job in a `-m` sweep": sweep_interrupted,
        "a second Ctrl-C (or SIGTERM) in a `-m` sweep": second_signal_in_a_sweep,
        "disk full or checkpoint folder unwritable": disk_full,
        "MLflow's artifact folder unwritable or full after the run began": artifacts_unwritable,
        "SIGKILL, out-of-memory kill or power cut": killed_outright,
    },
}
RUNNERS = {
    f"{section}: {name}": runners if isinstance(runners, tuple) else (runners,)
    for section, rows in LINKS.items()
    for name, runners in rows.items()
}


@pytest.fixture(scope="module")
def said(tmp_path_factory, worker_id, migrated_db, data_root) -> dict[str, list[Said] | Exception]:
    """Every linked row's answers (or what its runner raised): the runners here first, then the
    command lines of tests/test_errors.py, which another worker may still be running."""
    ctx = Context(
        tmp_path_factory.mktemp("errors-doc"),
        migrated_db,
        data_root,
        lambda: shared_outcomes(tmp_path_factory, worker_id, migrated_db, data_root),
    )
    found: dict[str, list[Said] | Exception] = {}
    shared_last = sorted(
        RUNNERS.items(),
        key=lambda item: all(getattr(runner, "shared", False) for runner in item[1]),
    )
    for key, runners in shared_last:
        try:
            found[key] = [answer for runner in runners for answer in runner(ctx)]
        except Exception as e:  # the row's test shows it
            found[key] = e
    return found


def _shown(answers: list[Said]) -> str:
    return "\n".join(f"  [{a.status}] {a.line}" for a in answers) or "  (nothing)"


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[row.key for row in ROWS])
def test_a_row_of_the_page_is_what_its_case_answers(request, row):
    assert row.key in RUNNERS, (
        f"docs/errors.md:{row.line}: no case runs this row's input: link one in LINKS"
    )
    answered = request.getfixturevalue("said")[row.key]
    if isinstance(answered, Exception):
        raise answered
    if row.key in SAME_AS:
        other, replaced = SAME_AS[row.key]
        (source,) = [r for r in ROWS if r.key == other]
        stated = []
        for span in messages(source.message):
            for old, new in replaced.items():
                span = span.replace(old, new)
            stated.append(span)
    else:
        stated = messages(row.message)
    if row.message.startswith("not an error"):
        assert not any(a.line.startswith(ERROR) for a in answered), _shown(answered)
    else:
        assert stated, f"docs/errors.md:{row.line}: the row states no message to check"
    for span in stated:
        assert any(says(span, a.line) for a in answered), (
            f"docs/errors.md:{row.line} says\n  {span}\nbut the code answered\n{_shown(answered)}"
        )
    allowed = statuses(row)
    if allowed is not None:
        for answer in answered:
            assert answer.status is None or answer.status in allowed, (
                f"docs/errors.md:{row.line} gives status {sorted(allowed)}, the code "
                f"{answer.status}:\n{_shown(answered)}"
            )


def test_every_table_is_checked_and_every_link_names_a_row():
    """A new table must say whose messages it holds (COLUMNS), or what checks it (BEHAVIOUR);
    a link whose row was renamed or removed is stale."""
    for section, _, _ in tables(DOC.read_text()):
        assert section in COLUMNS or section in BEHAVIOUR, (
            f"docs/errors.md: a table under '## {section}': add the section to COLUMNS "
            "(its messages are checked) or BEHAVIOUR (where its rows are checked)"
        )
    rows = {row.key for row in ROWS}
    stale = sorted({*RUNNERS, *SAME_AS} - rows)
    assert not stale, f"links to no row of docs/errors.md (renamed or removed?): {stale}"


def test_the_safety_section_names_the_allow_list():
    """The packages a config may name code under, as docs/errors.md's Safety section says."""
    from digitlab.config.targets import PROJECT_TARGETS, check_targets

    safety = DOC.read_text().partition("## Safety")[2]
    named = re.search(r"may only\s+name something under (.+?) \(`([\w.]+)`", safety, re.S)
    assert named, safety
    assert re.findall(r"`([\w.]+)\.`", named.group(1)) == list(PROJECT_TARGETS), named.group(0)
    assert named.group(2) == f"{check_targets.__module__}.{check_targets.__name__}"
