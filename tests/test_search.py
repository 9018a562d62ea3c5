"""The Optuna search: Hydra's sweep syntax, a stored study resumed and shared, pruned trials, the
study as optuna-dashboard serves it, and the MLflow parent's link to it."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import warm
from digitlab.search.space import distribution, search_space
from digitlab.search.study import storage_url
from test_sweep import sweep

# Every trial is pruned after its first epoch: Optuna's ThresholdPruner with an upper bound
# below any accuracy (a deterministic stand-in for the median pruner, which needs history).
ALWAYS_PRUNE = [
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.upper=-1.0",
]
SEARCH = ["experiment=search", "trainer.max_epochs=2", "hydra.sweeper.n_jobs=2"]


def parse(line: str):
    return distribution(OverridesParser.create().parse_override(line))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=interval(0.1, 0.5)", FloatDistribution(0.1, 0.5)),
        ("a=tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("a=int(interval(8, 32))", IntDistribution(8, 32)),
        ("a=tag(log, int(interval(8, 512)))", IntDistribution(8, 512, log=True)),
        ("a=choice(32, 64, 128)", CategoricalDistribution([32, 64, 128])),
        ("a=choice(relu, tanh)", CategoricalDistribution(["relu", "tanh"])),
        ("a=range(1, 10, 3)", IntDistribution(1, 7, step=3)),
        ("a=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
    ],
)
def test_hydra_sweep_syntax_becomes_optuna_distributions(line, expected):
    assert parse(line) == expected


def test_command_line_overrides_the_configured_space():
    params = {"optimizer.lr": "interval(0.01, 0.1)", "data.batch_size": "choice(32, 64)"}
    distributions, fixed = search_space(params, ["data.batch_size=16", "seed=choice(1, 2)"])
    assert fixed == {"data.batch_size": "16"}
    assert set(distributions) == {"optimizer.lr", "seed"}


def test_the_study_is_stored_beside_the_mlflow_store(tmp_path):
    assert storage_url(None, f"sqlite:///{tmp_path}/mlruns/mlflow.db") == (
        f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    assert storage_url("postgresql://db/optuna", "sqlite:///x.db") == "postgresql://db/optuna"


def last_sweep(store) -> tuple[MlflowClient, object, list]:
    """The client, the newest sweep parent run and its children."""
    client = MlflowClient(store["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    parents = [r for r in runs if "digitlab.sweep_id" in r.data.tags]
    parent = max(parents, key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def dashboard_get(storage: str, path: str) -> dict:
    """GET ``path`` of optuna-dashboard's own WSGI app (its JSON API), without a server."""
    from optuna_dashboard import wsgi

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(wsgi(storage)(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


@pytest.mark.slow
def test_a_stored_study_is_continued_shared_pruned_and_seen_by_the_dashboard(
    tmp_path, data_root, store
):
    study = ["hydra.sweeper.study_name=resumed", "hydra/sweeper/pruner=none"]
    sweep(tmp_path / "a", data_root, store, *SEARCH, *study, "hydra.sweeper.n_trials=2")
    # The same study again, two parallel workers (joblib) reporting to it; every trial pruned.
    sweep(
        tmp_path / "b",
        data_root,
        store,
        *SEARCH,
        *study,
        *ALWAYS_PRUNE,
        "hydra/launcher=parallel",
        "hydra.sweeper.n_trials=2",
    )
    url = storage_url(None, store["tracking_uri"])
    trials = optuna.load_study(study_name="resumed", storage=url).trials
    states = optuna.trial.TrialState
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state for t in trials] == [states.COMPLETE] * 2 + [states.PRUNED] * 2
    assert all(t.intermediate_values for t in trials)  # every job reported its epochs
    assert all(len(t.intermediate_values) == 1 for t in trials[2:])  # pruned after epoch 0

    # The dashboard's API sees every trial with its value and state.
    listed = dashboard_get(url, "/api/studies")["study_summaries"]
    studies = {s["study_name"]: s["study_id"] for s in listed}
    detail = dashboard_get(url, f"/api/studies/{studies['resumed']}")
    seen = {t["number"]: (t["state"], t.get("values")) for t in detail["trials"]}
    assert sorted(seen) == [0, 1, 2, 3]
    for trial in trials:
        state, values = seen[trial.number]
        assert state == trial.state.name.capitalize()
        assert values == (None if trial.value is None else [pytest.approx(trial.value)])
    assert all(seen[n][1] is not None for n in (0, 1))  # complete trials carry their value

    # A pruned trial's MLflow run: KILLED (not FAILED), tagged, its epoch history kept.
    client, parent, children = last_sweep(store)
    assert len(children) == 2
    for child in children:
        assert child.info.status == "KILLED"
        assert child.data.tags["digitlab.pruned"] == "true"
        assert child.data.tags["optuna.study_name"] == "resumed"
        assert len(client.get_metric_history(child.info.run_id, "val/acc")) == 1
    assert "test/acc" not in children[0].data.metrics  # a pruned trial is not tested
    # The parent links to the study in optuna-dashboard and names the command serving it.
    tags = parent.data.tags
    assert (
        tags["optuna.dashboard"] == f"http://127.0.0.1:8080/dashboard/studies/{studies['resumed']}"
    )
    assert "optuna-dashboard --host 127.0.0.1" in tags["mlflow.note.content"]
    assert parent.data.metrics["optuna/pruned"] == 2  # the whole study's count


@pytest.mark.slow
def test_a_new_study_name_starts_fresh_and_a_diverging_trial_fails_alone(
    tmp_path, data_root, store
):
    url = storage_url(None, store["tracking_uri"])
    optuna.create_study(study_name="old", storage=url).enqueue_trial({"x": 1})
    # lr 1e9 makes the loss non-finite: that trial fails, the sweep itself succeeds
    sweep(
        tmp_path,
        data_root,
        store,
        *SEARCH,
        "hydra.sweeper.study_name=fresh",
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=hyperband",
        "optimizer.lr=1e9",
    )
    (trial,) = optuna.load_study(study_name="fresh", storage=url).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert len(optuna.load_study(study_name="old", storage=url).trials) == 1  # untouched


@pytest.mark.slow
def test_an_unusable_storage_is_one_line(tmp_path, data_root, store):
    done = warm.run(
        "digitlab",
        "-m",
        "experiment=search",
        f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.storage=nosuchdialect://127.0.0.1/db",
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "digitlab: error: cannot open the Optuna storage nosuchdialect://" in done.stderr


@pytest.mark.slow
def test_submitit_jobs_report_to_the_one_stored_study_and_finish_their_runs(
    tmp_path, data_root, store
):
    # hydra/launcher=local is the SLURM launcher's path with submitit's local executor: every
    # trial a fresh process, as on a cluster node. (test_clusters.py checks the SLURM config.)
    sweep(
        tmp_path,
        data_root,
        store,
        *SEARCH,
        "hydra/launcher=local",
        "hydra.sweeper.study_name=submitit",
        "hydra.sweeper.n_trials=2",
    )
    jobs = [p for p in (tmp_path / "multirun" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2  # each trial went through submitit, as a job of its own (by job id)
    url = storage_url(None, store["tracking_uri"])
    trials = optuna.load_study(study_name="submitit", storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.intermediate_values.keys() == {0, 1} for t in trials)  # both epochs reported
    # The jobs' MLflow runs, and the sweep's parent, all ended FINISHED.
    client, parent, children = last_sweep(store)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" and "test/acc" in c.data.metrics for c in children)
    assert len(client.search_runs([parent.info.experiment_id])) == 3
