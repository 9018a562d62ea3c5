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
# How often a lost race is retried. A retry finds the rows the winner committed, so one is
# enough unless yet another job wins a race on another data set of the same call.
RETRIES = 3


def log_splits(
    client,
    run_id: str,
    name: str,
    paths: Iterable[str | Path],
    sizes: Mapping[str, int],
    split: Mapping[str, object],
) -> None:
    """Log one ``DatasetInput`` per split (``mnist-train``...) of the files at ``paths`` (by
    SHA-256), ``sizes`` (split -> images) and what cut them (``split``: seed, val_size...).

    Jobs of a sweep logging the same new data set at once race on MLflow's "look it up, insert
    if absent": the loser's insert fails on the unique key and is rolled back; logged again, it
    finds the winner's row, so it is retried."""
    files = {}
    for path in paths:  # MNIST's four .gz files take ~50 ms
        with open(path, "rb") as f:
            files[str(Path(path).resolve())] = hashlib.file_digest(f, "sha256").hexdigest()
    source = json.dumps({"files": files}, sort_keys=True)
    cut = {k: str(v) for k, v in split.items()}
    datasets = []
    for part, rows in sizes.items():
        # The same files cut another way (another seed or val_size) are another data set.
        recipe = {"files": sorted(files.values()), "split": part, "rows": rows, **cut}
        dataset = Dataset(
            name=f"{name}-{part}",
            digest=hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16],
            source_type="local",
            source=source,
            profile=json.dumps({"num_rows": rows, **cut}),
        )
        context = InputTag("mlflow.data.context", CONTEXTS.get(part, part))
        datasets.append(DatasetInput(dataset, tags=[context]))
    for attempt in range(RETRIES + 1):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except MlflowException as e:  # a unique key refused, in SQLite's or MySQL's words
            text = str(e).lower()
            lost_race = "unique constraint" in text or "duplicate entry" in text
            if attempt == RETRIES or not lost_race:
                raise
