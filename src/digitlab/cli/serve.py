"""``digitlab-serve``: a run's or a registered model over REST, plus the draw-a-digit page.

    digitlab-serve                          # a registered @best (else the newest run's model)
    digitlab-serve --model models:/digits@best --port 5001
    digitlab-serve --run RUN_ID
    digitlab-serve --model models:/digits@best --model models:/digits/1   # the page offers both

Binds 127.0.0.1 (``--host 0.0.0.0`` opens it to the network). Browse to http://127.0.0.1:5001/
to draw a digit; ``POST /invocations`` takes MLflow's scoring JSON; ``/docs`` describes the
API, ``/health`` and ``/ready`` say whether it runs and has its model, ``/metrics`` is for
Prometheus. Requests may pick (``?model=``) only the models given here, the first being the
default; ``--any-model`` lets them pick any digitlab model of the store. A model is loaded
from its weights and recipe only: one that carries code of its own is refused
(docs/security.md).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import NoReturn

import numpy as np

from digitlab.cli import plain
from digitlab.errors import DigitlabError
from digitlab.tracking import store
from digitlab.tracking.store import default_tracking_uri
from digitlab.tracking.tags import MODEL_NAME


def default_model(client) -> str:
    """A registered model's @best, else the newest run's model: refused, not passed over, when
    that run is gone from the store."""
    from digitlab.serving.models import available, run_models  # lazy: MLflow, see main

    choices = available(client)  # registered models first, then runs' models, newest first
    best = [c for c in choices if c["uri"].endswith("@best")]
    if not best and (newest := run_models(client, limit=1)) and newest[0][1] is None:
        model = newest[0][0]
        raise DigitlabError(
            f"the newest model in {client.tracking_uri}, {model.model_id}, was logged by run "
            f"{model.source_run_id}, which is no longer in the store: name the model to serve "
            "(--model URI or --run RUN_ID), or delete that model "
            f"(MlflowClient().delete_logged_model('{model.model_id}'))"
        )
    runs = [c for c in choices if c["uri"].startswith("runs:/")]
    if pick := best or runs or choices:
        return pick[0]["uri"]
    raise DigitlabError(
        f"no model in {client.tracking_uri} yet: train one (uv run digitlab), or pass "
        "--tracking-uri for the store your runs are in"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="digitlab-serve",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="URI",
        help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model; repeatable, the "
        "first is the default (default: a registered @best, else the newest run)",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN_ID",
        help="serve this training run's model; repeatable",
    )
    parser.add_argument(
        "--any-model",
        action="store_true",
        help="let requests pick any digitlab model of the store with ?model= (default: only "
        "the models given here)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=5001, help="port (default 5001; 0: any free one)"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to NAME (a proxy's or the LAN's name for this "
        "machine); repeatable. A loopback server answers only 127.0.0.1, localhost and ::1 "
        "otherwise (against DNS rebinding)",
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="allow your own network's package in a model's recipe; repeatable. Never trust a "
        "module for a model you did not make",
    )
    return parser.parse_args(argv)


def fail(message: str) -> NoReturn:
    print(f"digitlab: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # MLflow draws a progress bar on stderr for every model it downloads: noise around the
    # one-line errors and the serving line (set the variable to true to see them).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # lazy: MLflow, FastAPI and uvicorn, 4 s, which --help and a bad argument do without
    from digitlab.serving.models import ModelCache
    from digitlab.serving.server import make_server

    uri = None
    try:  # the store's own problems (damaged, read-only, full) are DigitlabErrors from here
        client = store.open_client(args.tracking_uri or default_tracking_uri())
        models = [*args.model, *(f"runs:/{run}/{MODEL_NAME}" for run in args.run)]
        models = models or [default_model(client)]
        allowed = None if args.any_model else tuple(dict.fromkeys(models))
        cache = ModelCache(client.tracking_uri, tuple(args.trust), allowed, pinned=tuple(models))
        for uri in models:  # load now: a bad model is a one-line error, not a first 404
            # and predict once: torch's first call on a network takes seconds (lazy
            # initialisation), which the first client would otherwise wait for
            cache.get(uri).predict(np.zeros((1, 28, 28), np.uint8))
    except DigitlabError as e:
        fail(str(e))
    except OSError as e:  # a model's file unreadable, or no room for the copy MLflow loads
        where = f": {e.filename}" if e.filename else ""
        fail(
            f"cannot load {uri or 'the models'} ({e.strerror or e}{where}): make that file "
            "readable, or free disk space there; or serve another --model"
        )
    try:
        server = make_server(
            client,
            models[0],
            args.host,
            args.port,
            models=cache,
            allowed_hosts=tuple(args.allow_host),
        )
    except OSError as e:  # binding only: the store and the models were read above
        if e.errno == errno.EADDRINUSE:
            fix = "pick another --port"
        elif e.errno == errno.EACCES:
            fix = "pick a --port above 1023 (the ones below need root), or another --host"
        else:  # not an address of this machine, or a name that does not resolve
            fix = "pick a --host of this machine (127.0.0.1, or 0.0.0.0 for all)"
        fail(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}): {fix}")
    host, port = server.server_address[:2]
    print(
        f"digitlab: serving {', '.join(models)} on http://{host}:{port}/ (draw a digit there; "
        f"POST /invocations for REST); Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
