"""``digitlab.ui()``: the MLflow UI on the store, started in the background from a notebook."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri, sqlite_path
from digitlab.tracking.ui_server import check_port, mlflow_ui_command, mlflow_ui_environment


class UI:
    """A running ``mlflow ui`` bound to 127.0.0.1: ``url`` to browse, ``stop()`` when done. It
    runs in its own session, so it outlives the kernel unless stopped."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server and its workers: uvicorn runs as a child, so the whole process group
        (the server's own session) is signalled, and waited for until none of it is left."""
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(group) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.2)  # reaps the leader; its children go to init
        if _alive(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait()

    def _repr_markdown_(self) -> str:  # Jupyter shows a link
        return f"MLflow UI: [{self.url}]({self.url}) (stop it with `.stop()`)"

    def __repr__(self) -> str:
        return f"UI({self.url})"


def ui(tracking_uri: str | None = None, port: int = 0, timeout_s: float = 120.0) -> UI:
    """Start the MLflow UI on ``tracking_uri`` (default: the project's store), on 127.0.0.1 and
    ``port`` (0: a free one), and wait until it answers; ``digitlab-ui`` is the shell's way."""
    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # as digitlab-ui: the UI must not create the store
        raise DigitlabError(f"no MLflow store at {db} yet: train a run first (digitlab.fit)")
    if port:  # a port taken is said in one line, not after the server's start-up timeout
        check_port("127.0.0.1", port, "pass another port, or port=0 for a free one")
    for _ in range(1 if port else 3):  # a free port can be taken before the server binds it
        chosen = port or _free_port()
        if (server := _start(uri, chosen, timeout_s)) is not None:
            return server
    raise DigitlabError(
        f"the MLflow UI did not start on port {chosen}: its log is {_log_path(chosen)}"
    )


def _alive(group: int) -> bool:
    """True while any process of the group is left (a zombie leader not yet reaped counts)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_path(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"digitlab-ui-{port}.log"


def _start(uri: str, port: int, timeout_s: float) -> UI | None:
    """The server on ``port`` once ``/health`` answers, or None if it exited or never answered.
    Its output goes to a log file, so no pipe fills up and blocks it."""
    log = _log_path(port)
    env = mlflow_ui_environment(dict(os.environ))
    command = mlflow_ui_command(uri, port=port)
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = UI(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    return None
