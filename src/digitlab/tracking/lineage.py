"""Data lineage: each run's splits logged as MLflow dataset inputs (``log_inputs``), named by
the source files' digest, so two runs on different data are told apart in the UI. No torch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException

# MLflow's context tag values for the splits digitlab keeps.
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def file_digests(paths: Iterable[str | Path]) -> dict[str, str]:
    """SHA-256 of each file, by absolute path (MNIST's four .gz files take ~50 ms)."""
    digests = {}
    for path in paths:
        with open(path, "rb") as f:
            digests[str(Path(path).resolve())] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def split_datasets(
    name: str, files: Mapping[str, str], sizes: Mapping[str, int], split: Mapping[str, object]
):
    """One ``DatasetInput`` per split (``mnist-train``...): of ``files`` (path -> SHA-256),
    ``sizes`` (split -> images) and what cut them (``split``: seed, val_size, test_size)."""
    source = json.dumps({"files": dict(files)}, sort_keys=True)
    inputs = []
    for part, rows in sizes.items():
        # The same files cut another way (another seed or val_size) are another data set.
        recipe = json.dumps(
            {
                "files": sorted(files.values()),
                "split": part,
                "rows": rows,
                **{k: str(v) for k, v in split.items()},
            },
            sort_keys=True,
        )
        dataset = Dataset(
            name=f"{name}-{part}",
            digest=hashlib.sha256(recipe.encode()).hexdigest()[:16],
            source_type="local",
            source=source,
            profile=json.dumps({"num_rows": rows, **{k: str(v) for k, v in split.items()}}),
        )
        context = InputTag("mlflow.data.context", CONTEXTS.get(part, part))
        inputs.append(DatasetInput(dataset, tags=[context]))
    return inputs


def log_splits(
    client,
    run_id: str,
    name: str,
    paths: Iterable[str | Path],
    sizes: Mapping[str, int],
    split: Mapping[str, object],
) -> None:
    """Log the run's splits as its dataset inputs. Jobs of a sweep logging the same new data
    set at once race on MLflow's "look it up, insert if absent": the loser's insert fails on the
    unique key and is rolled back; logged again, it finds the winner's row, so it is retried."""
    datasets = split_datasets(name, file_digests(paths), sizes, split)
    for attempt in range(RETRIES + 1):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except MlflowException as e:
            if attempt == RETRIES or not _lost_insert_race(e):
                raise


# How often a lost race is retried. A retry finds the rows the winner committed, so one is
# enough unless yet another job wins a race on another data set of the same call.
RETRIES = 3


def _lost_insert_race(error: Exception) -> bool:
    """Whether the store refused an insert on a unique key (SQLite, PostgreSQL, MySQL wording)."""
    text = str(error).lower()
    return "unique constraint" in text or "duplicate entry" in text
