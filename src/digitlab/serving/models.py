"""Which models the server may load, and loading them once: digitlab's own MLflow Models only."""

from __future__ import annotations

import re
import threading
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.tracking.registry import MODEL_NAME
from digitlab.training.logged_model import LOADER

# models:/name@alias, models:/name/3, models:/m-<id>, runs:/<run id>/model: never a file path,
# which would let a request load a model from anywhere on disk.
URI = re.compile(r"^(models:/[\w.\- ]+(@[\w\-]+|/\d+)?|runs:/[0-9a-f]{32}/" + MODEL_NAME + ")$")


class UnknownModel(DigitlabError):
    """A model URI that is malformed, absent from the store, or not a digitlab model."""


class ModelCache:
    """Loads each model URI once (``mlflow.pyfunc.load_model``) and keeps it for later requests.

    Args:
        tracking_uri: the MLflow store that ``models:/`` and ``runs:/`` URIs resolve in.
        trusted: your own network's modules, passed to the model's loader (never the model's).
    """

    def __init__(self, tracking_uri: str, trusted: tuple[str, ...] = ()) -> None:
        self.tracking_uri, self.trusted = tracking_uri, trusted
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, uri: str):
        if not URI.match(uri or ""):
            raise UnknownModel(
                f"model {uri!r} is not a model URI: use models:/NAME@ALIAS, "
                "models:/NAME/VERSION or runs:/RUN_ID/model"
            )
        with self._lock:  # one load per URI, even when the page and a client ask together
            if uri not in self._models:
                self._models[uri] = self._load(uri)
            return self._models[uri]

    def _load(self, uri: str):
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            flavor = Model.load(uri).flavors.get("python_function", {})
        except (MlflowException, OSError):
            raise UnknownModel(
                f"no model {uri} in {self.tracking_uri}: pick one of /models"
            ) from None
        # Loading imports the module the model names: only digitlab's own model code.
        if flavor.get("loader_module") != LOADER:
            raise UnknownModel(
                f"{uri} is not a digitlab model (its loader is "
                f"{flavor.get('loader_module')!r}): serve a model digitlab logged"
            )
        return mlflow.pyfunc.load_model(uri, model_config={"trust": list(self.trusted)})


def available(client, limit: int = 50) -> list[dict[str, str]]:
    """What the page offers: each registered model's aliases and versions, then runs' models,
    newest first. ``[{"uri", "label"}]``."""
    choices = []
    for registered in client.search_registered_models():
        name = registered.name
        for alias, version in sorted((registered.aliases or {}).items()):
            choices.append(
                {"uri": f"models:/{name}@{alias}", "label": f"{name}@{alias} (v{version})"}
            )
        for version in client.search_model_versions(f"name = '{name}'")[:limit]:
            choices.append(
                {"uri": f"models:/{name}/{version.version}", "label": f"{name} v{version.version}"}
            )
    experiments = [e.experiment_id for e in client.search_experiments()]
    if experiments:
        for model in client.search_logged_models(
            experiment_ids=experiments,
            max_results=limit,
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        ):
            if model.name == MODEL_NAME and model.source_run_id:
                run = client.get_run(model.source_run_id)
                acc = run.data.metrics.get("test/acc")
                shown = f" test/acc {acc:.4f}" if acc is not None else ""
                choices.append(
                    {
                        "uri": f"runs:/{model.source_run_id}/{MODEL_NAME}",
                        "label": f"run {run.info.run_name}{shown}",
                    }
                )
    return choices
