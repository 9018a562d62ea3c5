"""The jobs behind both front doors (the command line and the Python API): plain functions that
do the work and return what they did; ``cli/`` parses and prints, ``api/`` wraps for notebooks."""

import os
from unittest import mock

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def quiet_downloads():
    """MLflow's download progress bars off within the block, unless the environment asks for
    them: four lines of bars per file around one-line answers (MLflow reads it per download)."""
    return mock.patch.dict(os.environ, {PROGRESS_BAR: os.environ.get(PROGRESS_BAR, "false")})
