"""The jobs behind both front doors (the command line and the Python API): plain functions that
do the work and return what they did; ``cli/`` parses and prints, ``api/`` wraps for notebooks."""

import contextlib
import os
from collections.abc import Iterator

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """MLflow's download progress bars off within the block, unless the environment asks for
    them: four lines of bars per file around one-line answers (MLflow reads it per download)."""
    before = os.environ.get(PROGRESS_BAR)
    os.environ.setdefault(PROGRESS_BAR, "false")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR, None)
