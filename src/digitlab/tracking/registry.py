"""The model registry: a run's model registered under a name, and the alias ``@best`` on the
version with the highest ``test/acc`` (aliases, not the deprecated stages). No torch here."""

from __future__ import annotations

from digitlab.errors import DigitlabError

# The name of the model inside its run: ``runs:/<run id>/model``.
MODEL_NAME = "model"

BEST_ALIAS = "best"
RANK_METRIC = "test/acc"
# Set on a sweep's parent run: the child with the best sweep target (tracking.sweep.summarise).
BEST_CHILD_TAG = "digitlab.best_run_id"


def run_model_id(client, run_id: str) -> str:
    """The id of the LoggedModel ``model`` that run ``run_id`` logged (a sweep parent: its best
    child's). Raises DigitlabError naming the fix when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise DigitlabError(
            f"no MLflow run {run_id} in {client.tracking_uri}: check the id, or pass the store "
            "it was logged to (--tracking-uri)"
        ) from None
    if best_child := run.data.tags.get(BEST_CHILD_TAG):
        return run_model_id(client, best_child)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'",
    )
    if not models:
        raise DigitlabError(
            f"run {run_id} logged no model (trained with logger.log_model=false, or before "
            "models were logged): train it again with logger.log_model=true"
        )
    return models[0].model_id


def register(client, run_id: str, name: str) -> str:
    """Register run ``run_id``'s model (a sweep parent: its best child's) as a new version of
    ``name``, move ``@best`` to the best version, and return the new version number."""
    import mlflow

    model_id = run_model_id(client, run_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    # mlflow.register_model creates the registered model if needed, tolerating a parallel job
    # that creates it first.
    version = mlflow.register_model(f"models:/{model_id}", name).version
    point_best(client, name)
    return str(version)


def point_best(client, name: str) -> str | None:
    """Set ``name@best`` to the version whose run scored the highest ``test/acc``; returns it."""
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
