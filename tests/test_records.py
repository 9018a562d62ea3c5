"""Records per CPU-hour: out-of-fold predictions of a cross-validation, a committee's out-of-fold
accuracy, the final fit on every labelled row, and the recipe from train.csv to submission.csv."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from digitlab.errors import DigitlabError
from synthetic import N_TEST, N_TRAIN

ROOT = Path(__file__).resolve().parents[1]
# Kaggle's tiny train.csv with 40 of its rows held out as the test split: the folds cut the rest.
KAGGLE_CV = ("data=kaggle", "model=mlp", "data.test_size=40", "data.split_seed=3", "data.folds=3")


def oof_table(client: MlflowClient, run_id: str, folder: Path) -> dict[str, np.ndarray]:
    with np.load(client.download_artifacts(run_id, "cv/oof.npz", str(folder))) as table:
        return {key: table[key] for key in table.files}


@pytest.fixture
def cv_parent(make_cfg, tmp_path):
    """A 3-fold cross-validation on the tiny train.csv: (its config, its parent's run id)."""
    from digitlab.training.crossval import cross_validate

    cfg = make_cfg(*KAGGLE_CV)
    return cfg, cross_validate(cfg, tmp_path / "cv", choices={"data": "kaggle"})["run_id"]


def test_out_of_fold_predictions_cover_every_non_test_row_once(cv_parent, tmp_path):
    from digitlab.training.build import build_datamodule

    cfg, parent_id = cv_parent
    client = MlflowClient(cfg.logger.tracking_uri)
    table = oof_table(client, parent_id, tmp_path)
    datamodule = build_datamodule(cfg)
    datamodule.split()
    test_rows = set(datamodule.rows["test"].tolist())
    assert len(test_rows) == 40
    # every row of train.csv but the test split's, once, in the file's order
    assert table["rows"].tolist() == sorted(set(range(N_TRAIN)) - test_rows)
    assert sorted(np.unique(table["fold"]).tolist()) == [0, 1, 2]
    assert table["probabilities"].shape == (N_TRAIN - 40, 10)
    np.testing.assert_allclose(table["probabilities"].sum(axis=1), 1, rtol=1e-5)
    from digitlab.data.sources import read_data

    labels = read_data(cfg.data).train_labels.numpy()
    assert np.array_equal(table["labels"], labels[table["rows"]])
    correct = table["probabilities"].argmax(axis=1) == table["labels"]
    metrics = client.get_run(parent_id).data.metrics
    p = float(correct.mean())
    assert metrics["cv/oof_acc"] == pytest.approx(p)
    assert metrics["cv/oof_acc_se"] == pytest.approx(math.sqrt(p * (1 - p) / len(correct)))


def test_the_out_of_fold_pass_can_average_over_the_tta_moves(make_cfg, tmp_path):
    from digitlab.serving.model import probabilities
    from digitlab.training.build import build_datamodule
    from digitlab.training.checkpoints import network_from_checkpoint
    from digitlab.training.crossval import cross_validate

    cfg = make_cfg(*KAGGLE_CV, "oof_tta=true")
    parent_id = cross_validate(cfg, tmp_path / "cv", choices={"data": "kaggle"})["run_id"]
    client = MlflowClient(cfg.logger.tracking_uri)
    table = oof_table(client, parent_id, tmp_path)
    fold = cfg.copy()
    fold.data.fold = 1
    datamodule = build_datamodule(fold)
    images, _ = datamodule.split()["val"]
    net, config = network_from_checkpoint(tmp_path / "cv" / "fold1" / "checkpoints" / "last.ckpt")
    rows = np.searchsorted(table["rows"], datamodule.rows["val"].numpy())
    for tta in (True, False):
        expected = probabilities(net, images, config, tta=tta).numpy()
        same = np.allclose(table["probabilities"][rows], expected, atol=1e-6)
        assert same == tta


def test_a_committee_of_one_cross_validation_scores_as_it_does(cv_parent, make_cfg, tmp_path):
    import digitlab
    from digitlab.training.crossval import cross_validate

    cfg, parent_id = cv_parent
    uri = cfg.logger.tracking_uri
    client = MlflowClient(uri)
    result = digitlab.predict(
        run_id=[parent_id], data="oof", tracking_uri=uri, out=tmp_path / "o.npy"
    )
    own = client.get_run(parent_id).data.metrics["cv/oof_acc"]
    assert result.accuracy == pytest.approx(own)
    np.testing.assert_allclose(
        np.load(result.probabilities), oof_table(client, parent_id, tmp_path)["probabilities"]
    )
    recorded = client.get_run(result.run_id)
    assert recorded.data.params["ensemble.data"] == "oof"
    assert recorded.data.metrics["accuracy_se"] == pytest.approx(
        math.sqrt(own * (1 - own) / result.n)
    )
    # another split's folds predict other rows: they make no committee
    other = make_cfg(*KAGGLE_CV, "data.split_seed=4")
    other_id = cross_validate(other, tmp_path / "other", choices={"data": "kaggle"})["run_id"]
    with pytest.raises(DigitlabError, match="cut different folds") as error:
        digitlab.predict(run_id=[parent_id, other_id], data="oof", tracking_uri=uri)
    assert "\n" not in str(error.value)


def test_a_final_fit_trains_on_every_labelled_row_and_says_so(make_cfg, tmp_path):
    from digitlab.training.run import train

    # with the pictures and the logged model, as the records recipe trains it
    cfg = make_cfg(
        "data=kaggle",
        "model=mlp",
        "data.val_size=0",
        "logger.log_model=true",
        "figures.enabled=true",
    )
    result = train(cfg, tmp_path, choices={"data": "kaggle"})
    run = MlflowClient(cfg.logger.tracking_uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["digitlab.final_fit"] == "true"
    assert not any(k.startswith(("val/", "test/")) for k in run.data.metrics)
    sizes = {
        i.dataset.name: json.loads(i.dataset.profile)["num_rows"] for i in run.inputs.dataset_inputs
    }
    assert sizes["kaggle-train"] == N_TRAIN and sizes["kaggle-val"] == 0
    assert Path(result["best_checkpoint"]).is_file()  # the last epoch, the run's model


def test_a_final_fit_on_mnist_is_tested_on_its_own_test_set(make_cfg, tmp_path):
    from digitlab.training.run import train

    cfg = make_cfg("model=mlp", "data.val_size=0")
    result = train(cfg, tmp_path, choices={"data": "mnist"})
    metrics = MlflowClient(cfg.logger.tracking_uri).get_run(result["run_id"]).data.metrics
    assert "test/acc" in metrics and "val/acc" not in metrics


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.test_size=40"], "data.test_size=40 would hold rows out"),
        (
            [
                "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
                "+callbacks.stop.monitor=val/acc",
            ],
            "callbacks.stop monitors val/acc",
        ),
    ],
)
def test_what_a_final_fit_cannot_do_is_refused_in_one_line(make_cfg, overrides, message):
    from digitlab.config.spec import check_config

    with pytest.raises(DigitlabError, match=message) as error:
        check_config(make_cfg("data=kaggle", "data.val_size=0", *overrides))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_quick_recipe_ends_with_a_submission_and_its_table(data_root, store, tmp_path):
    table = tmp_path / "records.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "records.py"),
            "--quick",
            "--root",
            str(data_root),
            "--tracking-uri",
            store["tracking_uri"],
            "--out",
            str(tmp_path / "out"),
            "--table",
            str(table),
            "--jobs",
            "1",
            "--mnist",
            f"logger.artifact_location={store['artifact_location']}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (tmp_path / "out" / "submission.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "Label"] and len(rows) == N_TEST + 1
    assert [int(r[0]) for r in rows[1:]] == list(range(1, N_TEST + 1))
    assert all(r[1] in "0123456789" for r in rows[1:])
    text = table.read_text()
    assert "out-of-fold" in text and "CPU-min" in text and "±" in text
    assert "MNIST t10k" in text and "mean ± std" in text
    # --quick fits the first member on MNIST with two seeds, so its spread is a real std
    assert "| kaggle_records, seeds 1 2 |" in text and "committee of 2, TTA" in text
