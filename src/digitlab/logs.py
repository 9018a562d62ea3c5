"""What a command prints besides digitlab's own lines: the libraries' INFO lines only on request.

Lightning announces the devices it found, where it restores checkpoints from and why fit ended;
MLflow that it creates or migrates its tables. None of it is news to a user who typed the
command, and it buries digitlab's own lines (the epoch report, the summary). ``verbose=true``
(or ``DIGITLAB_VERBOSE=1``) brings it all back.
"""

from __future__ import annotations

import logging
import os

# Loggers whose INFO lines are noise unless asked for: the libraries', matplotlib's (it says
# when it builds its font cache, once per machine), and digitlab's time to the first training
# step (a measurement, logged to the run as time_to_first_step_s).
LIBRARIES = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "mlflow",
    "alembic",
    "matplotlib",
    "digitlab.callbacks.throughput",
)


def verbose_requested(cfg=None) -> bool:
    if os.environ.get("DIGITLAB_VERBOSE", "") not in ("", "0"):
        return True
    return bool(cfg is not None and hasattr(cfg, "get") and cfg.get("verbose", False))


def set_verbosity(verbose: bool) -> None:
    """Libraries' INFO lines on (``verbose``) or off; their warnings and errors always show."""
    level = logging.NOTSET if verbose else logging.WARNING
    # MLflow sets its own logger's level when first imported, from this variable.
    if verbose:
        os.environ.pop("MLFLOW_LOGGING_LEVEL", None)
    else:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level if name != "mlflow" or not verbose else logging.INFO)
