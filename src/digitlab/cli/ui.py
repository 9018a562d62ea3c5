"""``digitlab-ui``: the MLflow UI on the project's store, bound to 127.0.0.1 (no torch import).

The server's command, environment and page are :mod:`digitlab.tracking.ui_server`'s, shared with
``digitlab.ui()``; here the arguments are parsed and the process replaced by the server.
"""

from __future__ import annotations

import argparse
import os
import sys

from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri, sqlite_path
from digitlab.tracking.ui_server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    check_port,
    mlflow_ui_command,
    mlflow_ui_environment,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="digitlab-ui",
        description="Open the MLflow UI on digitlab's run store; browse to http://HOST:PORT.",
    )
    parser.add_argument(
        "--backend-store-uri",
        default=None,
        metavar="URI",
        help="store to show (default: logger.tracking_uri, i.e. <project>/mlruns/mlflow.db)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 5000)")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: the network)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1, enough for one browser; MLflow's own default is 4, "
        "each a Python process importing MLflow)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    uri = args.backend_store_uri or default_tracking_uri()
    try:
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            # Letting the UI create the store would give its experiments server-side artifact
            # locations that digitlab's direct SQLite client cannot write to.
            raise DigitlabError(
                f"no MLflow store at {db} yet: train a run first (uv run digitlab), "
                "or point --backend-store-uri at an existing store"
            )
        # Before announcing the address: uvicorn would say the port is taken among its start-up
        # lines, after the announcement, and MLflow would exit 0.
        check_port(args.host, args.port, "choose another with --port N")
    except DigitlabError as e:
        print(f"digitlab-ui: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(
        f"digitlab-ui: MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C stops it)",
        flush=True,
    )
    os.environ.update(mlflow_ui_environment(dict(os.environ)))
    # exec: Ctrl-C and signals go straight to the server, no wrapper process is left behind.
    command = mlflow_ui_command(uri, args.host, args.port, args.workers)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
