"""The same overrides train the same thing through the command line and ``digitlab.fit``: both
run :func:`digitlab.jobs.train.run_job`. Compared by what each recorded in its store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import digitlab
import warm
from conftest import copy_store


def recorded(uri: str) -> list[tuple[str, int, list[str]]]:
    """Each top-level run of the store: (name, number of children, metric names)."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return sorted(
        (
            r.info.run_name.split("-cv")[0] + ("-cv" if "-cv" in r.info.run_name else ""),
            sum(c.data.tags.get("mlflow.parentRunId") == r.info.run_id for c in runs),
            sorted(r.data.metrics),
        )
        for r in parents
    )


@pytest.mark.slow
def test_cross_validation_is_the_same_job_through_both_doors(data_root, migrated_db, tmp_path):
    common = [
        f"data.root={data_root}",
        "data.folds=2",
        "model=mlp",
        "trainer.max_epochs=1",
        "data.batch_size=32",
        "figures.enabled=false",
        "logger.log_model=false",
        "trainer.enable_progress_bar=false",
    ]
    for door in ("cli", "api"):
        (tmp_path / door).mkdir()
    stores = {door: copy_store(tmp_path / door, migrated_db) for door in ("cli", "api")}

    def place(door: str) -> list[str]:
        return [
            f"logger.tracking_uri={stores[door]['tracking_uri']}",
            f"logger.artifact_location={stores[door]['artifact_location']}",
        ]

    done = warm.run(
        "digitlab", *common, *place("cli"), f"hydra.run.dir={tmp_path / 'job'}", timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fitted = digitlab.fit(*common, *place("api"))
    assert fitted.model is None and "cv/val_acc_mean" in fitted.metrics
    by_cli, by_api = (
        recorded(stores["cli"]["tracking_uri"]),
        recorded(stores["api"]["tracking_uri"]),
    )
    assert by_cli == by_api and by_cli[0][1] == 2  # one parent with its two folds, alike
