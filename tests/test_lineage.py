"""Data lineage: every run logs its splits as MLflow dataset inputs (context, size, digests)."""

from __future__ import annotations

import hashlib
import json

from mlflow.tracking import MlflowClient

from conftest import N_TEST, N_TRAIN, write_mnist
from digitlab.training.run import train


def inputs_of(uri: str, run_id: str) -> dict[str, object]:
    """context -> the dataset logged for it."""
    run = MlflowClient(uri).get_run(run_id)
    return {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
        for i in run.inputs.dataset_inputs
    }


def test_each_split_is_an_input_with_its_context_size_and_file_digests(
    make_cfg, data_root, tmp_path
):
    cfg = make_cfg()
    result = train(cfg, output_dir=tmp_path / "a", choices={"data": "mnist"})
    inputs = inputs_of(cfg.logger.tracking_uri, result["run_id"])
    assert set(inputs) == {"training", "validation", "test"}
    sizes = {c: json.loads(d.profile)["num_rows"] for c, d in inputs.items()}
    assert sizes == {"training": N_TRAIN - 40, "validation": 40, "test": N_TEST}
    assert inputs["training"].name == "mnist-train"
    files = json.loads(inputs["test"].source)["files"]
    raw = sorted((data_root / "MNIST" / "raw").glob("*.gz"))
    assert files == {str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest() for p in raw}
    assert len({d.digest for d in inputs.values()}) == 3

    # The same files and split give the same digests; other files give other digests.
    again = train(cfg, output_dir=tmp_path / "b", choices={"data": "mnist"})
    assert {
        c: d.digest for c, d in inputs_of(cfg.logger.tracking_uri, again["run_id"]).items()
    } == {c: d.digest for c, d in inputs.items()}
    other_root = write_mnist(tmp_path / "other", n_train=N_TRAIN + 8)
    other = train(
        make_cfg(f"data.root={other_root}"), output_dir=tmp_path / "c", choices={"data": "mnist"}
    )
    other_inputs = inputs_of(cfg.logger.tracking_uri, other["run_id"])
    assert all(other_inputs[c].digest != inputs[c].digest for c in inputs)


def test_the_split_seed_and_the_fold_name_the_rows(make_cfg, tmp_path):
    # Runs of a seed sweep with one data.split_seed train on the same rows: one data set. Two
    # folds of one cross-validation (one seed) train on different rows: two data sets.
    def digests(*overrides: str) -> dict[str, str]:
        cfg = make_cfg(*overrides)
        run = train(cfg, output_dir=tmp_path / "-".join(overrides), choices={"data": "mnist"})
        return {c: d.digest for c, d in inputs_of(cfg.logger.tracking_uri, run["run_id"]).items()}

    assert digests("seed=1", "data.split_seed=0") == digests("seed=2", "data.split_seed=0")
    first, second = (digests("seed=1", "data.folds=2", f"data.fold={k}") for k in (0, 1))
    assert first["training"] != second["training"] and first["validation"] != second["validation"]


def test_kaggle_lineage_names_its_csv(make_cfg, data_root, tmp_path):
    cfg = make_cfg("data=kaggle")
    result = train(cfg, output_dir=tmp_path / "k")  # no choices: named after the source function
    inputs = inputs_of(cfg.logger.tracking_uri, result["run_id"])
    assert inputs["training"].name == "kaggle-train"
    assert list(json.loads(inputs["training"].source)["files"]) == [
        str((data_root / "digit-recognizer" / "train.csv").resolve())
    ]


def test_a_job_that_loses_the_race_to_create_a_data_set_still_logs_it(store, tmp_path):
    # Jobs of one sweep log the same new data sets. MLflow looks a data set up and inserts it if
    # absent in one transaction; here a second job commits the same data sets between the two
    # steps of the first (as two processes at the same moment can), so the first's insert hits
    # the unique key. The job must still log its inputs, onto the one shared data-set row.
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from digitlab.tracking.lineage import log_splits

    uri = store["tracking_uri"]
    client = MlflowClient(uri)
    experiment = client.create_experiment("race", artifact_location=store["artifact_location"])
    loser, winner = (client.create_run(experiment).info.run_id for _ in range(2))
    data = tmp_path / "images.bin"
    data.write_bytes(b"\x00" * 64)
    args = ("mnist", [data], {"train": 50, "test": 10}, {"seed": 0})

    raced = []

    def winner_commits_first(session, flush_context, instances):
        if not raced:  # the loser's first insert; the winner's own flushes pass through
            raced.append(session)
            log_splits(MlflowClient(uri), winner, *args)

    event.listen(Session, "before_flush", winner_commits_first)
    try:
        log_splits(client, loser, *args)
    finally:
        event.remove(Session, "before_flush", winner_commits_first)
    assert raced

    logged = {run: inputs_of(uri, run) for run in (loser, winner)}
    assert set(logged[loser]) == set(logged[winner]) == {"training", "test"}
    for context in ("training", "test"):
        assert logged[loser][context].digest == logged[winner][context].digest
