"""The MLflow UI's process, for both ``digitlab-ui`` and ``digitlab.ui()``: MLflow's own
``mlflow ui``, its command and environment. No torch import."""

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


def mlflow_ui_command(
    tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1
) -> list[str]:
    """The process serving MLflow's UI on ``tracking_uri``: ``mlflow ui``, via :data:`LAUNCHER`."""
    args = ["--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]
    return [sys.executable, "-c", LAUNCHER, "ui", *args, "--workers", str(workers)]


def check_port(host: str, port: int, fix: str) -> None:
    """A one-line :class:`DigitlabError` naming ``fix`` when the server could not bind
    ``host:port``; bound as the server binds (``SO_REUSEADDR``: a port in TIME_WAIT is free)."""
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
    """``mlflow <args>`` (default: this process's arguments), exiting non-zero when the server
    fails: ``mlflow ui`` exits 0 whatever became of its server, which ends only when a signal
    stops it (reaching this process too): one that ended while no signal came here failed."""
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
    """``environ`` for the UI's process: no telemetry, and no job runner (eight worker processes
    for GenAI jobs, competing with training for cores), unless the user set them; without the
    warning of a Starlette module MLflow imports (MLflow's to act on, not the user's)."""
    quiet = "ignore:starlette.middleware.wsgi is deprecated"
    warnings = ",".join(filter(None, [environ.get("PYTHONWARNINGS"), quiet]))
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **environ,
        "PYTHONWARNINGS": warnings,
    }
