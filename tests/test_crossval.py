"""K-fold cross-validation: disjoint folds covering the training rows, K child runs under one
parent with the fold statistics, and the CV mean as the objective of an Optuna search."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from digitlab.data.datamodule import DigitDataModule, fold_split
from digitlab.data.sources import DigitData
from digitlab.errors import DigitlabError
from digitlab.search.study import storage_url
from test_search import SEARCH, last_sweep
from test_sweep import sweep


@pytest.mark.parametrize(("n", "folds"), [(10, 3), (240, 5), (7, 7)])
def test_folds_are_disjoint_and_their_union_is_the_rows(n, folds):
    rows = torch.randperm(n) + 100
    vals = []
    for fold in range(folds):
        val, train = fold_split(rows, folds, fold)
        assert set(val.tolist()).isdisjoint(train.tolist())
        assert sorted([*val.tolist(), *train.tolist()]) == sorted(rows.tolist())
        vals.append(set(val.tolist()))
    assert set().union(*vals) == set(rows.tolist())
    assert sum(len(v) for v in vals) == n  # pairwise disjoint
    assert max(map(len, vals)) - min(map(len, vals)) <= 1


def test_the_data_module_validates_on_one_fold_of_the_training_data():
    n = 30
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    data = DigitData(images, torch.arange(n) % 10, images[:5], torch.arange(5))
    seen = []
    for fold in range(3):
        split = DigitDataModule(lambda: data, seed=7, folds=3, fold=fold).split()
        val = split["val"][0][:, 0, 0].tolist()
        train = split["train"][0][:, 0, 0].tolist()
        assert sorted(val + train) == list(range(n))  # the whole training set, once
        assert torch.equal(split["test"][0], images[:5])  # the test set stays the test set
        seen.append(set(val))
    assert set().union(*seen) == set(range(n)) and sum(map(len, seen)) == n


def test_impossible_folds_are_refused_in_one_line():
    with pytest.raises(DigitlabError, match="data.folds=5, data.fold=0 cannot split 3"):
        fold_split(torch.arange(3), 5, 0)


def test_three_fold_cv_trains_three_children_under_one_parent(make_cfg, tmp_path):
    from digitlab.training.crossval import cross_validate

    cfg = make_cfg("model=mlp", "data.folds=3")
    result = cross_validate(cfg, tmp_path, choices={"model": "mlp", "data": "mnist"})
    client = MlflowClient(cfg.logger.tracking_uri)
    parent = client.get_run(result["run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert parent.info.status == "FINISHED" and parent.info.run_name.endswith("-cv3")
    assert sorted(c.data.tags["digitlab.fold"] for c in children) == ["0", "1", "2"]
    accs = [c.data.metrics["val/acc"] for c in children]
    metrics = parent.data.metrics
    assert metrics["cv/val_acc_mean"] == pytest.approx(statistics.fmean(accs))
    assert metrics["cv/val_acc_std"] == pytest.approx(statistics.stdev(accs))
    assert metrics["val/acc"] == pytest.approx(metrics["cv/val_acc_mean"])
    assert result["metrics"]["cv/val_acc_mean"] == pytest.approx(metrics["cv/val_acc_mean"])
    # read as a file: MlflowClient.load_table searches through the process-wide tracking URI
    import json

    table = json.loads(
        Path(client.download_artifacts(result["run_id"], "cv/folds.json")).read_text()
    )
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert sorted(r["fold"] for r in rows) == [0, 1, 2]
    assert sorted(r["val/acc"] for r in rows) == pytest.approx(sorted(accs))


@pytest.mark.slow
def test_an_optuna_search_maximises_the_cv_mean(tmp_path, data_root, store):
    sweep(
        tmp_path,
        data_root,
        store,
        *SEARCH,
        "data.folds=2",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.study_name=cv",
    )
    client, parent, children = last_sweep(store)
    (cv_parent,) = children
    assert cv_parent.data.tags["digitlab.cv_folds"] == "2"
    url = storage_url(None, store["tracking_uri"])
    (trial,) = optuna.load_study(study_name="cv", storage=url).trials
    assert trial.value == pytest.approx(cv_parent.data.metrics["cv/val_acc_mean"])
    assert trial.intermediate_values.keys() == {0, 1}  # the running mean, fold by fold
    folds = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{cv_parent.info.run_id}'"
    )
    assert len(folds) == 2


def test_ctrl_c_in_a_fold_ends_the_fold_and_its_parent_killed(make_cfg, tmp_path, monkeypatch):
    """Ctrl-C while fold 0 trains: the fold's run and the cross-validation's own run both end
    KILLED (nothing failed), and the one line is the fold's, naming it for resume=."""
    import os
    import signal

    from digitlab.errors import Interrupted
    from digitlab.models import MLP
    from digitlab.training.crossval import cross_validate

    original, forwards = MLP.forward, []

    def ctrl_c_at_the_third_step(self, x):
        if self.training:
            forwards.append(1)
            if len(forwards) == 3:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, x)

    monkeypatch.setattr(MLP, "forward", ctrl_c_at_the_third_step)
    cfg = make_cfg("model=mlp", "data.folds=2", "data.steps_per_call=1")
    with pytest.raises(Interrupted) as e:
        cross_validate(cfg, tmp_path, choices={"model": "mlp", "data": "mnist"})
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (fold,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.info.status == fold.info.status == "KILLED"
    assert str(e.value).startswith(f"SIGINT stopped training; run {fold.info.run_id} is KILLED")
