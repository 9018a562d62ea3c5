"""digitlab: config-driven handwritten-digit experiments (Hydra + Lightning + MLflow)."""

import time

__version__ = "0.1.0"

# When the command started, give or take the interpreter's own start (tens of ms): the package is
# the first thing `python -m digitlab` imports. Time to first training step is counted from here.
STARTED = time.time()
