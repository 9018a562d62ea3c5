"""The MLflow UI's process, for both ``digitlab-ui`` and ``digitlab.ui()``: its command, arguments
and environment, and the launcher that runs MLflow's own ``mlflow ui``. No torch import.

The page is MLflow's, as MLflow serves it. MLflow 3.17 opens a browser's first visit in its GenAI
layout and offers no server setting or experiment tag that changes that (the page follows the
GenAI / Model training switch in its sidebar, which each browser remembers): the user picks
*Model training* there once.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

from digitlab.errors import DigitlabError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
# ``python -c LAUNCHER <mlflow arguments>`` runs ``mlflow <arguments>`` (see :func:`launch`).
LAUNCHER = "from digitlab.tracking.ui_server import launch; launch()"


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
    """``mlflow <args>`` (default: this process's arguments): the ``mlflow`` command's own entry.

    Exits non-zero when the server fails: ``mlflow ui`` waits for its uvicorn process and exits
    0 whatever became of it (a port taken, a crash). A UI server ends only when stopped, by
    Ctrl-C or a signal, which reaches this process too: a server that ended while no signal came
    here failed."""
    from mlflow.cli import cli  # lazy: MLflow, 2.0 s, which digitlab-ui --help does without

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
