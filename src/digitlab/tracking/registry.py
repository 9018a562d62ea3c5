"""The model registry: a run's model registered under a name, and the alias ``@best`` on the
version with the highest ``test/acc``. Imports MLflow (2 s): ``--help`` reads ``tracking.tags``."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from digitlab.errors import DigitlabError
from digitlab.tracking.tags import MODEL_NAME

BEST_ALIAS = "best"
RANK_METRIC = "test/acc"
# Set on a sweep's parent run: the child with the best sweep target (tracking.sweep.summarise).
BEST_CHILD_TAG = "digitlab.best_run_id"


@dataclass(frozen=True)
class Registration:
    """What :func:`register` did: ``version`` of ``name`` holds run ``run_id``'s model, made now
    (``new``) or earlier; ``@best`` is then version ``best``; ``scored``: the run has a score."""

    name: str
    version: str
    run_id: str
    new: bool
    best: str | None
    scored: bool

    def line(self) -> str:
        model = f"models:/{self.name}/{self.version}"
        if self.new:
            done = f"registered {model} (run {self.run_id})"
        else:
            done = f"run {self.run_id}'s model is already {model}, no new version made"
        alias = f"models:/{self.name}@{BEST_ALIAS}"
        if self.scored:
            return f"{done}; {alias} is version {self.best}"
        # a run trained with test_after_fit=false has no score: registered, but it cannot rank
        moved = f"stays version {self.best}" if self.best else "is not set"
        return (
            f"{done}; {alias} {moved}: run {self.run_id} has no {RANK_METRIC} to rank it by "
            "(trained with test_after_fit=false)"
        )


def model_source(client, run_id: str) -> tuple[str, str]:
    """``(run id, model id)`` of the model that run ``run_id`` (or its best child) logged."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise DigitlabError(
            f"no MLflow run {run_id} in {client.tracking_uri}: check the id, or pass the store "
            "it was logged to (--tracking-uri)"
        ) from None
    if best_child := run.data.tags.get(BEST_CHILD_TAG):
        return model_source(client, best_child)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'",
    )
    if not models:
        raise DigitlabError(
            f"run {run_id} logged no model (trained with logger.log_model=false, or before "
            "models were logged): train it again with logger.log_model=true"
        )
    return run_id, models[0].model_id


def register(client, run_id: str, name: str) -> Registration:
    """Register run ``run_id``'s model as a version of ``name`` (unless one holds it already),
    then move ``@best`` to the best version."""
    source_run, model_id = model_source(client, run_id)
    version = registered_version(client, name, model_id)
    new = version is None
    if version is None:
        version = _new_version(client, name, source_run, model_id)
    scored = client.get_run(source_run).data.metrics.get(RANK_METRIC) is not None
    return Registration(name, version, source_run, new, point_best(client, name), scored)


def registered_version(client, name: str, model_id: str) -> str | None:
    """The version of ``name`` holding the model ``model_id``, if one does (no two versions of
    one model)."""
    # A version's source is the model's artifact location (see _new_version), or models:/<id>
    # in stores registered to before that.
    sources = {client.get_logged_model(model_id).artifact_location, f"models:/{model_id}"}
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.model_id == model_id or version.source in sources:
            return str(version.version)
    return None


def _new_version(client, name: str, run_id: str, model_id: str) -> str:
    """A new version of ``name`` holding ``model_id``: through the client, not
    ``mlflow.register_model``, which prints its own lines on stderr."""
    try:
        client.create_registered_model(name)
    except MlflowException as e:  # a parallel job, or an earlier registration, made it first
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The model's artifact location, not models:/<id>: MLflow's store resolves that through the
    # process's global tracking URI, which is the caller's (a notebook's) own, not this store's.
    source = client.get_logged_model(model_id).artifact_location
    created = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    return str(created.version)


def point_best(client, name: str) -> str | None:
    scored = []
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.run_id:
            score = client.get_run(version.run_id).data.metrics.get(RANK_METRIC)
            if score is not None:
                scored.append((score, int(version.version)))
    if not scored:
        return None
    best = str(max(scored)[1])  # a tie goes to the newer version
    client.set_registered_model_alias(name, BEST_ALIAS, best)
    return best
