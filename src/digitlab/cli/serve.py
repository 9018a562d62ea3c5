"""``digitlab-serve``: a run's or a registered model over REST, plus the draw-a-digit page.

    digitlab-serve                          # a registered @best (else the newest run's model)
    digitlab-serve --model models:/digits@best --port 5001
    digitlab-serve --run RUN_ID

Binds 127.0.0.1 (``--host 0.0.0.0`` opens it to the network). Browse to http://127.0.0.1:5001/
to draw a digit; ``POST /invocations`` takes MLflow's scoring JSON.
"""

from __future__ import annotations

import argparse
import sys

from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri


def default_model(client) -> str:
    """A registered model's @best, else the newest run's model."""
    from digitlab.serving.models import available

    choices = available(client)  # registered models first, then runs' models, newest first
    best = [c for c in choices if c["uri"].endswith("@best")]
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
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="URI",
        help="models:/NAME@ALIAS, models:/NAME/VERSION "
        "or runs:/RUN_ID/model (default: a registered @best, else the newest run)",
    )
    which.add_argument("--run", metavar="RUN_ID", help="serve this training run's model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=5001, help="port (default 5001; 0: any free one)"
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="allow your own network's package in a model's recipe; repeatable",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from digitlab.serving.server import make_server
    from digitlab.tracking import store

    try:
        client = store.open_client(args.tracking_uri or default_tracking_uri())
        model = args.model or (args.run and f"runs:/{args.run}/model") or default_model(client)
        server = make_server(client, model, args.host, args.port, tuple(args.trust))
        server.models.get(model)  # load now: a bad model is a one-line error, not a first 404
    except OSError as e:
        print(
            f"digitlab: error: cannot listen on {args.host}:{args.port} ({e.strerror}): "
            "pick another --port",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    host, port = server.server_address[:2]
    print(
        f"digitlab: serving {model} on http://{host}:{port}/ (draw a digit there; "
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
