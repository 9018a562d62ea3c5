"""``digitlab-register RUN_ID --name NAME``: register a run's model; ``NAME@best`` follows the
highest ``test/acc``. A sweep's parent run registers its best child. A run registered before
under that name answers with its version (no new one); a run without ``test/acc``
(``test_after_fit=false``) is registered and leaves ``@best`` where it was. No torch import."""

from __future__ import annotations

import argparse
import sys

from digitlab.cli import plain
from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="digitlab-register", description=plain(__doc__))
    parser.add_argument("run", metavar="RUN_ID", help="a training run, or a sweep's parent run")
    parser.add_argument("--name", required=True, help="registered model name, e.g. digits")
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    args = parser.parse_args(argv)
    from digitlab.jobs.register import register  # lazy: MLflow, 2 s, which --help does without

    try:
        registration = register(args.run, args.name, tracking_uri=args.tracking_uri)
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"digitlab: {registration.line()}", flush=True)


if __name__ == "__main__":
    main()
