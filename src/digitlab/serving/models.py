"""Which models the server may load, and loading them once: digitlab's own MLflow Models only."""

from __future__ import annotations

import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.pyfunc import CODE, MODEL_CONFIG

from digitlab.errors import DigitlabError
from digitlab.serving.model import load
from digitlab.tracking.tags import MODEL_NAME
from digitlab.training.logged_model import LOADER

# models:/name@alias, models:/name/3, models:/m-<id>, runs:/<run id>/model: never a file path,
# which would let a request load a model from anywhere on disk.
URI = re.compile(r"^(models:/[\w.\- '\"]+(@[\w\-]+|/\d+)?|runs:/[0-9a-f]{32}/" + MODEL_NAME + ")$")


class UnknownModel(DigitlabError):
    """A model URI that is malformed, absent from the store, not served here, or not a digitlab
    model."""


class RefusedModel(DigitlabError):
    """A model whose MLmodel asks to run code of its own: refused before anything of it runs."""


# An MLmodel is a few hundred bytes; a larger one is not digitlab's.
MAX_MLMODEL_BYTES = 64 * 1024


def checked_data_path(folder: Path, uri: str) -> Path:
    """The weights-only checkpoint inside a downloaded model ``folder``, once its MLmodel,
    parsed as plain YAML, asks for nothing but digitlab's own loader: no ``code_paths``
    (MLflow would put them first on ``sys.path``), no other ``loader_module``, no
    ``model_config`` (a model must not widen its own trust), and data inside the folder."""
    try:
        with (folder / "MLmodel").open(encoding="utf-8") as f:
            text = f.read(MAX_MLMODEL_BYTES + 1)
        mlmodel = yaml.safe_load(text) if len(text) <= MAX_MLMODEL_BYTES else None
    except Exception:  # missing, unreadable, or not YAML (yaml.YAMLError, RecursionError)
        mlmodel = None
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    flavor = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        raise UnknownModel(f"{uri} has no readable MLmodel: serve a model digitlab logged")
    if flavor.get("loader_module") != LOADER:
        shown = str(flavor.get("loader_module"))[:80]
        raise RefusedModel(
            f"{uri} is not a digitlab model (its loader is {shown!r}): refused, nothing of it "
            "was run; serve a model digitlab logged"
        )
    for key, what in (
        (CODE, "code_paths (its own Python files)"),
        (MODEL_CONFIG, "a model_config of its own (a model cannot trust itself)"),
    ):
        if flavor.get(key):
            raise RefusedModel(
                f"{uri} carries {what}: refused, nothing of it was run; digitlab models carry "
                "weights and a recipe only (give trust with --trust MODULE instead)"
            )
    name: Any = flavor.get("data")  # a text or not: the path it makes is checked
    try:
        data = (folder / name).resolve()
        inside = data.is_relative_to(folder.resolve()) and data.is_file()
    except (TypeError, ValueError, OSError):  # not a text, a NUL in it, too long a name
        inside = False
    if not inside:
        raise RefusedModel(
            f"{uri}'s data {str(name)[:80]!r} is not a file inside the model: "
            "refused; serve a model digitlab logged"
        )
    return data


class ModelBusy(DigitlabError):
    """A request for a model not loaded yet while as many requests as the cache allows already
    wait on loads: answered at once (503) instead of taking one more worker."""


# Requests that may wait on model loads at once: with the server's 8 workers, at least 4 stay for
# loaded models and /health however slow the loads are.
LOADING = 4


class ModelCache:
    """Loads each model URI once and keeps it for later requests.

    A model is downloaded, its MLmodel checked (:func:`checked_data_path`) and its checkpoint
    loaded by digitlab's loader directly, with the user's ``trusted`` modules: not through
    ``mlflow.pyfunc.load_model``, which would first add the model's own ``code_paths`` to
    ``sys.path`` and hand the loader the model's own ``model_config``.

    A load holds only the requests for its own URI: a loaded model answers, and another URI
    loads, meanwhile. At most ``loading`` requests wait on loads at once (the one loading
    included); one more that needs a model not loaded yet gets :class:`ModelBusy` at once.

    Args:
        tracking_uri: the MLflow store that ``models:/`` and ``runs:/`` URIs resolve in.
        trusted: your own network's modules (never the model's).
        allowed: the URIs requests may ask for (``?model=``); None: any digitlab model of the
            store (the operator's choice, ``digitlab-serve --any-model``).
        keep: how many models stay loaded at most; the least recently used one is let go for
            another, so requests naming model after model cannot fill the memory.
        pinned: URIs never let go (the server's default model, which /ready reports on and
            which would otherwise be loaded again by a readiness probe after ``keep`` others).
        loading: how many requests may wait on loads at once (``LOADING``).
        load: how a URI becomes a model (default: downloaded from the store, checked and loaded
            as above); a test gives its own.
    """

    def __init__(
        self,
        tracking_uri: str,
        trusted: tuple[str, ...] = (),
        allowed: tuple[str, ...] | None = None,
        keep: int = 8,
        pinned: tuple[str, ...] = (),
        loading: int = LOADING,
        load: Callable[[str], Any] | None = None,
    ) -> None:
        self.tracking_uri, self.trusted, self.allowed = tracking_uri, trusted, allowed
        self.keep = max(keep, len(allowed or ()), len(pinned) + 1)
        self.pinned = frozenset(pinned)
        self.load, self.loading = load or self.download, loading
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.loads: dict[str, threading.Lock] = {}  # one per URI being loaded
        self.lock = threading.Lock()  # over the two dicts only, never over a load
        self.waiting = threading.BoundedSemaphore(loading)

    def get(self, uri: str):
        if not URI.match(uri or ""):
            raise UnknownModel(
                f"model {uri!r} is not a model URI: use models:/NAME@ALIAS, "
                "models:/NAME/VERSION or runs:/RUN_ID/model"
            )
        if self.allowed is not None and uri not in self.allowed:
            raise UnknownModel(
                f"model {uri} is not served here: this server serves {', '.join(self.allowed)} "
                "(its operator can add it with --model)"
            )
        if (model := self.loaded(uri)) is not None:
            return model
        if not self.waiting.acquire(blocking=False):
            raise ModelBusy(
                f"{uri} is not loaded yet and the server is busy loading models ({self.loading} "
                "requests wait on loads, the most it allows): retry in a few seconds"
            )
        try:
            with self.lock:
                loading = self.loads.setdefault(uri, threading.Lock())
            with loading:  # one load per URI, even when the page and a client ask together
                if (model := self.loaded(uri)) is None:  # else the request waited for loaded it
                    model = self.load(uri)
                    with self.lock:
                        self.models[uri] = model
                        while len(self.models) > self.keep:  # the oldest not pinned goes
                            del self.models[next(u for u in self.models if u not in self.pinned)]
                return model
        finally:
            with self.lock:  # after the model is in: a request arriving now finds it loaded
                self.loads.pop(uri, None)
            self.waiting.release()

    def loaded(self, uri: str):
        with self.lock:
            if uri in self.models:
                self.models.move_to_end(uri)
            return self.models.get(uri)

    def download(self, uri: str):
        # Process-wide: a runs:/ URI's logged model is not found through download_artifacts'
        # own tracking_uri (MLflow 3.x), only through this.
        mlflow.set_tracking_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="digitlab-serve-") as folder:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            except (MlflowException, OSError):
                raise UnknownModel(
                    f"no model {uri} in {self.tracking_uri}: pick one of /models"
                ) from None
            return load(str(checked_data_path(Path(local), uri)), self.trusted)


def offered(client, allowed: tuple[str, ...] | None) -> list[dict[str, str]]:
    """What the page offers: the models the server may serve (``allowed``; None: every digitlab
    model of the store, :func:`available`), labelled as :func:`available` labels them."""
    choices = available(client)
    if allowed is None:
        return choices
    labels = {c["uri"]: c["label"] for c in choices}
    return [{"uri": uri, "label": labels.get(uri, uri)} for uri in allowed]


def run_models(client, limit: int = 50) -> list[tuple[Any, Any]]:
    """The store's digitlab models logged by runs, newest first: ``(logged model, its run)``,
    the run None where its row is gone from the store (deleted by ``mlflow gc``, or a store
    copied in part)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    found = []
    for model in client.search_logged_models(
        experiment_ids=experiments,
        max_results=limit,
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    ):
        if model.name == MODEL_NAME and model.source_run_id:
            try:
                run = client.get_run(model.source_run_id)
            except MlflowException as e:
                if e.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                    raise
                run = None
            found.append((model, run))
    return found


def available(client, limit: int = 50) -> list[dict[str, str]]:
    """What the page offers: each registered model's aliases and versions, then runs' models,
    newest first (those whose run is gone left out: ``runs:/`` cannot reach them).
    ``[{"uri", "label"}]``."""
    choices = []
    # All versions in one search: MLflow's filter strings cannot quote a name holding both ' and "
    versions = client.search_model_versions()
    for registered in client.search_registered_models():
        name = registered.name
        for alias, version in sorted((registered.aliases or {}).items()):
            choices.append(
                {"uri": f"models:/{name}@{alias}", "label": f"{name}@{alias} (v{version})"}
            )
        for version in [v for v in versions if v.name == name][:limit]:
            choices.append(
                {"uri": f"models:/{name}/{version.version}", "label": f"{name} v{version.version}"}
            )
    for model, run in run_models(client, limit):
        if run is not None:
            acc = run.data.metrics.get("test/acc")
            shown = f" test/acc {acc:.4f}" if acc is not None else ""
            choices.append(
                {
                    "uri": f"runs:/{model.source_run_id}/{MODEL_NAME}",
                    "label": f"run {run.info.run_name}{shown}",
                }
            )
    return choices
