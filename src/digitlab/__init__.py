"""digitlab: config-driven handwritten-digit experiments (Hydra + Lightning + MLflow).

From Python (and Jupyter)::

    import digitlab
    cfg = digitlab.compose("model=mlp")            # the config `digitlab model=mlp` runs
    result = digitlab.fit("model=mlp")             # run id, metrics, seconds, model
    result.model.predict(images)                   # (N, C) probabilities of C classes
    digitlab.runs(model="mlp")                     # the store's runs, a pandas DataFrame
    digitlab.load(run_id).predict(images)          # any run's network
    digitlab.predict(run_id, data="kaggle")        # files and a run, as digitlab-predict does
    digitlab.register(run_id, "digits")            # a model version, as digitlab-register does
    digitlab.show(run_id, "figures/filters/*")     # a run's pictures, inline
    server = digitlab.ui(); server.stop()          # the MLflow UI on the store
"""

import importlib
import time

__version__ = "0.1.0"

# When the command started, give or take the interpreter's own start (tens of ms): the package is
# the first thing `python -m digitlab` imports. Time to first training step is counted from here.
STARTED = time.time()

# The Python API (api/, and the jobs both doors share), imported on first use: the command line
# imports this package first and must not pay for Hydra, MLflow or torch before it needs them.
_API = {
    "compose": "digitlab.api.compose",
    "fit": "digitlab.api.fit",
    "FitResult": "digitlab.api.fit",
    "runs": "digitlab.api.runs",
    "load": "digitlab.api.model",
    "Model": "digitlab.api.model",
    "predict": "digitlab.jobs.predict",
    "Prediction": "digitlab.jobs.predict",
    "register": "digitlab.jobs.register",
    "Registration": "digitlab.jobs.register",
    "show": "digitlab.api.show",
    "ui": "digitlab.api.ui",
}
__all__ = [*_API, "STARTED", "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
