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
    """Register run ``run_id``'s model as a version of ``name`` unless one holds it already (no
    two versions of one model), then move ``@best`` to the version scoring the best ``test/acc``
    (a tie goes to the newer one)."""
    source_run, model_id = model_source(client, run_id)
    # The model's artifact location, not models:/<id>: MLflow's store resolves that through the
    # process's global tracking URI, which is the caller's (a notebook's) own, not this store's.
    # Stores registered to before used models:/<id>.
    source = client.get_logged_model(model_id).artifact_location
    versions = client.search_model_versions(f"name = '{name}'")
    sources = {source, f"models:/{model_id}"}
    held = [v for v in versions if v.model_id == model_id or v.source in sources]
    version = str(held[0].version) if held else None
    if version is None:  # through the client: mlflow.register_model prints its own lines
        try:
            client.create_registered_model(name)
        except MlflowException as e:  # a parallel job, or an earlier registration, made it first
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        made = client.create_model_version(name, source, run_id=source_run, model_id=model_id)
        version = str(made.version)
    scores = []
    for v in client.search_model_versions(f"name = '{name}'"):
        score = client.get_run(v.run_id).data.metrics.get(RANK_METRIC) if v.run_id else None
        if score is not None:
            scores.append((score, int(v.version)))
    best = str(max(scores)[1]) if scores else None
    if best is not None:
        client.set_registered_model_alias(name, BEST_ALIAS, best)
    scored = client.get_run(source_run).data.metrics.get(RANK_METRIC) is not None
    return Registration(name, version, source_run, not held, best, scored)
