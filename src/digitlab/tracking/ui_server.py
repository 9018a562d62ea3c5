"""The MLflow UI's process, for both ``digitlab-ui`` and ``digitlab.ui()``: its command, arguments
and environment, and the launcher that serves MLflow's page with digitlab's first choices. No
torch import.

MLflow 3's page keeps its layout in each browser (localStorage), and opens a browser's first
visit in its GenAI layout: an experiment opens on a traces overview, and an assistant panel takes
a third of the window. digitlab runs MLflow's own ``mlflow ui`` through a launcher that serves the
same page with other first choices (:data:`PAGE_DEFAULTS`): the training view, the assistant one
click away, digitlab's metrics as columns of the runs table. What a user picks there stays theirs.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from pathlib import Path

from digitlab.errors import DigitlabError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
# The runs table's columns a first visit shows besides the run's name, start and duration: its
# model, then digitlab's main metrics; together they fit a 1440-pixel-wide window. (MLflow's own
# first columns are Source, always empty for digitlab's runs, Models and the wide Dataset; the
# table's Columns menu adds any of them back.)
ATTRIBUTE_COLUMNS = ("attributes.`Models`",)
METRIC_COLUMNS = ("test/acc", "val/acc", "val/loss", "train/loss")
# ``python -c LAUNCHER <mlflow arguments>`` runs ``mlflow <arguments>`` with digitlab's page.
LAUNCHER = "from digitlab.tracking.ui_server import launch; launch()"
MLFLOW_APP = "mlflow.server.fastapi_app:app"
CLASSIC_APP = "digitlab.tracking.ui_server:classic_app"


# Run by digitlab's page before MLflow's script, on the keys MLflow 3.17's page keeps in
# localStorage, where this browser has no setting yet: the training layout; the assistant's
# panel counted as opened once (a first visit opens it by itself); and RUNS_TABLE read for any
# experiment's runs table never saved (so experiments made later get the columns too).
PAGE_SCRIPT = """(() => {
  const first = {"mlflow.workflowType_v1": '"machine_learning"',
                 "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"};
  for (const [key, value] of Object.entries(first)) {
    if (localStorage.getItem(key) === null) localStorage.setItem(key, value);
  }
  const runsTable = /^MLflowLocalStorage-[0-9.]+-ExperimentPage-.*-ReactComponentState$/;
  const getItem = Storage.prototype.getItem;
  Storage.prototype.getItem = function (key) {
    const value = getItem.call(this, key);
    const unsaved = value === null && this === localStorage && runsTable.test(key);
    return unsaved ? RUNS_TABLE : value;
  };
})();"""


def _page_defaults() -> str:
    import json

    columns = [*ATTRIBUTE_COLUMNS, *(f"metrics.`{metric}`" for metric in METRIC_COLUMNS)]
    return PAGE_SCRIPT.replace("RUNS_TABLE", json.dumps(json.dumps({"selectedColumns": columns})))


PAGE_DEFAULTS = _page_defaults()


def mlflow_ui_args(
    tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1
) -> list[str]:
    """The ``mlflow ui`` arguments serving ``tracking_uri`` on ``host:port``."""
    return [
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def mlflow_ui_command(
    tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1
) -> list[str]:
    """The process serving MLflow's UI on ``tracking_uri``: ``mlflow ui``, via :data:`LAUNCHER`."""
    return [sys.executable, "-c", LAUNCHER, *mlflow_ui_args(tracking_uri, host, port, workers)]


def check_port(host: str, port: int, fix: str) -> None:
    """Raise a one-line :class:`DigitlabError` when the server could not bind ``host:port``
    (another program serves there, a port below 1024, an address not of this machine), naming
    ``fix``: the way to choose another port. Bound as the server binds (``SO_REUSEADDR``), so a
    port a stopped server left in TIME_WAIT counts as free, as it is to the server."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DigitlabError(
                f"port {port} on {host} is already in use (another MLflow UI, or another "
                f"program): {fix}"
            ) from None
        reason = e.strerror or str(e)
        raise DigitlabError(f"cannot serve on {host}:{port} ({reason}): {fix}") from None


def launch(args: list[str] | None = None) -> None:
    """``mlflow <args>`` (default: this process's arguments), serving :func:`classic_app`.

    Exits non-zero when the server fails: ``mlflow ui`` waits for its uvicorn process and exits
    0 whatever became of it (a port taken, a crash). A UI server ends only when stopped, by
    Ctrl-C or a signal, which reaches this process too: a server that ended while no signal came
    here failed."""
    from mlflow.cli import cli

    serve_classic_page()
    signalled, wakeup = os.pipe()
    os.set_blocking(signalled, False)
    os.set_blocking(wakeup, False)
    signal.set_wakeup_fd(wakeup)  # each signal this process receives writes a byte here
    try:
        cli.main(args=sys.argv[1:] if args is None else args, prog_name="mlflow")
        code = 0
    except SystemExit as e:
        code = e.code
    try:
        stopped = bool(os.read(signalled, 64))
    except BlockingIOError:
        stopped = False
    if code in (0, None) and not stopped:
        print(
            "digitlab-ui: error: the MLflow UI server stopped by itself: its lines above say why",
            file=sys.stderr,
            flush=True,
        )
        code = 1
    sys.exit(code)


def serve_classic_page() -> None:
    """Make ``mlflow ui`` start uvicorn on :func:`classic_app` instead of MLflow's app (the
    server runs in a process of its own, which imports the app by name)."""
    import mlflow.server

    build = mlflow.server._build_uvicorn_command

    def build_classic(*args, **kwargs) -> list[str]:
        command = build(*args, **kwargs)
        if command[-1] == MLFLOW_APP:
            command[-1:] = ["--factory", CLASSIC_APP]
        return command

    mlflow.server._build_uvicorn_command = build_classic


def classic_app():
    """MLflow's server app whose page (``/``, the one HTML file of MLflow's single-page UI)
    runs :data:`PAGE_DEFAULTS` first. Served fresh each time (no-cache): a browser that cached
    it would keep an old script."""
    from flask import Response
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    serve = flask_app.view_functions["serve"]
    index = Path(flask_app.static_folder) / "index.html"

    def serve_classic():
        if not index.is_file():  # a source checkout of MLflow: its own explanation
            return serve()
        page = index.read_text(encoding="utf-8")
        page = page.replace("<head>", f"<head><script>{PAGE_DEFAULTS}</script>", 1)
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-cache"})

    flask_app.view_functions["serve"] = serve_classic
    return app


def mlflow_ui_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` for the UI's process: no telemetry, and without MLflow's job runner (eight
    huey worker processes, for its GenAI jobs), which browsing runs does not use and which would
    compete with training for a laptop's cores. A value the user set wins. MLflow's server
    imports a Starlette module that Starlette deprecates: the warning is MLflow's to act on, not
    the user's, so it is left out of the UI's output (other warnings show)."""
    quiet = "ignore:starlette.middleware.wsgi is deprecated"
    warnings = ",".join(filter(None, [environ.get("PYTHONWARNINGS"), quiet]))
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **environ,
        "PYTHONWARNINGS": warnings,
    }
