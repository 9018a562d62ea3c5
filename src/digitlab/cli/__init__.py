"""Command-line entry points: ``digitlab`` (train), ``digitlab-predict``, ``digitlab-ui``,
``digitlab-register``, ``digitlab-serve``; ``--help``."""

import os
import re
import sys
import warnings

# Deprecation notices from dependencies (SQLAlchemy inside MLflow, Lightning's pytree shim, ...)
# are for their callers' maintainers, not for someone training a network; a user who asks for
# warnings (python -W, PYTHONWARNINGS) still gets every one. Through the environment, the
# processes a command starts (DDP ranks, parallel sweep workers) inherit the same filter.
if not sys.warnoptions:
    QUIET = "ignore::DeprecationWarning,ignore::PendingDeprecationWarning,ignore::FutureWarning"
    os.environ["PYTHONWARNINGS"] = QUIET
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def plain(docstring: str) -> str:
    """A module docstring as ``--help`` text: its reStructuredText literals (double backticks,
    for the API docs) as plain words."""
    return re.sub(r"``(.+?)``", r"\1", docstring, flags=re.S)
