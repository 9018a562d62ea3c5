"""An ensemble's side of the store: its members' runs (a sweep's parent stands for its finished
children), their logged checkpoints, and the ensemble's own MLflow run. No torch here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from digitlab.errors import DigitlabError
from digitlab.tracking.owners import owner_tags, reap_dead_owners
from digitlab.tracking.store import get_or_create_experiment, sqlite_path

# Ensembles get an experiment of their own: in the training experiment an ensemble would look
# like one more training run to the sweep summaries, the presets table and digitlab.runs().
EXPERIMENT = "ensembles"
PARENT_TAG = "mlflow.parentRunId"
MEMBERS_TAG = "digitlab.ensemble.members"
SWEEPS_TAG = "digitlab.ensemble.sweeps"
SKIPPED_TAG = "digitlab.ensemble.skipped"
# One training run's predictions get a run of their own here, linked to it by this tag.
PREDICTIONS = "predictions"
SOURCE_TAG = "digitlab.predicted_from"


def get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise DigitlabError(
            f"no MLflow run {run_id} in this store: check the id, or pass --tracking-uri "
            "(the store the run was logged to)"
        ) from None


def run_checkpoint(client, run_id: str, folder: Path) -> Path:
    """Download the best checkpoint a training run logged (artifact ``checkpoints/*.ckpt``)."""
    get_run(client, run_id)
    names = [
        a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")
    ]
    if not names:
        raise DigitlabError(
            f"run {run_id} logged no checkpoint (was logger.log_checkpoint=false?): "
            "pass --checkpoint with the job folder's checkpoints/best.ckpt instead"
        )
    return Path(client.download_artifacts(run_id, names[0], str(folder)))


def children(client, run) -> list:
    """The child runs of ``run`` (a sweep's jobs, a cross-validation's folds), oldest first."""
    return client.search_runs(
        [run.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{run.info.run_id}'",
        max_results=10_000,
        order_by=["attributes.start_time ASC"],
    )


def finished_children(client, parent) -> tuple[list[str], list[str]]:
    """``(FINISHED children's run ids, "<id> (<status>)" of the others)``: pruned, failed or
    running jobs are no members."""
    finished, others = [], []
    for child in children(client, parent):
        if child.info.status == "FINISHED":
            finished.append(child.info.run_id)
        else:
            others.append(f"{child.info.run_id} ({child.info.status})")
    return finished, others


def experiment_id(client, name: str = EXPERIMENT) -> str:
    """The ``ensembles`` (or ``name``) experiment, its artifacts beside training runs'."""
    db = sqlite_path(client.tracking_uri)
    location = str(db.parent / "artifacts") if db is not None else None
    found = get_or_create_experiment(client, name, location)
    reap_dead_owners(client, found)  # an ensemble whose process was killed mid-way
    return found


def ensemble_run(
    client,
    members: Sequence[str],
    settings: Mapping[str, Any],
    command: str,
    sweeps: Sequence[str] = (),
    skipped: Sequence[str] = (),
) -> contextlib.AbstractContextManager[str]:
    """The ensemble's :func:`recorded_run` of its ``members`` (run ids or checkpoint paths),
    ``settings`` as ``ensemble.<key>`` params, the ``command`` doing the same, the ``sweeps``
    whose children became members and the ``skipped`` members ("<member>: <reason>")."""
    tags = {
        **owner_tags(),
        MEMBERS_TAG: " ".join(members)[:8000],
        "digitlab.command": command[:8000],
        "mlflow.note.content": f"Ensemble of {len(members)} members: `{command}`"[:8000],
    }
    if sweeps:
        tags[SWEEPS_TAG] = " ".join(sweeps)
    if skipped:
        tags[SKIPPED_TAG] = "; ".join(skipped)[:8000]
    method = settings.get("method", "mean")
    params = {"members": str(len(members)), **{k: str(v) for k, v in settings.items()}}
    return recorded_run(
        client,
        experiment_id(client),
        f"ensemble-{len(members)}-{method}",
        tags,
        {f"ensemble.{k}": v for k, v in params.items()},
    )


def prediction_run(
    client, source_run_id: str, settings: Mapping[str, Any], command: str
) -> contextlib.AbstractContextManager[str]:
    """The :func:`recorded_run` of one training run's predictions, linked to it by a tag, never
    written into it (predicting again replaces nothing)."""
    source = get_run(client, source_run_id)
    tags = {
        **owner_tags(),
        SOURCE_TAG: source_run_id,
        "digitlab.command": command[:8000],
        "mlflow.note.content": f"Predictions of run {source.info.run_name} "
        f"({source_run_id}): `{command}`"[:8000],
    }
    name = f"predict-{source.info.run_name}-{settings.get('data', 'data')}"[:250]
    params = {f"predict.{k}": str(v) for k, v in settings.items()}
    return recorded_run(client, experiment_id(client, PREDICTIONS), name, tags, params)


@contextlib.contextmanager
def recorded_run(
    client, experiment: str, name: str, tags: Mapping[str, str], params: Mapping[str, str]
) -> Iterator[str]:
    """Create a run and yield its id; it ends FINISHED when the block completes, FAILED when it
    raises."""
    run_id = client.create_run(experiment, run_name=name, tags=dict(tags)).info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_results(
    client,
    run_id: str,
    table_csv: str | None,
    metrics: Mapping[str, float | None],
    files: Sequence[Path],
) -> None:
    """The members' table (an ensemble's), the metrics that exist, and the prediction files."""
    if table_csv is not None:
        client.log_text(run_id, table_csv, "ensemble/members.csv")
    for name, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, name, float(value))
    for path in files:
        client.log_artifact(run_id, str(path), "predictions")
