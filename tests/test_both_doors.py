"""Each job does the same through the command line and the Python API: training
(``digitlab`` and ``digitlab.fit``, both :func:`digitlab.jobs.train.run_job`), predicting with
one run or an ensemble (``digitlab-predict`` and ``digitlab.predict``) and registering
(``digitlab-register`` and ``digitlab.register``). Compared by what each door recorded in its
own copy of one store, the files it wrote, and what it answered."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import digitlab
import warm
from conftest import copy_store, fast_config, fast_run
from digitlab.cli.predict import summary
from digitlab.tracking.owners import PID_TAG, START_TAG
from digitlab.training.run import train

DOORS = ("cli", "api")


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
    stores = {}
    for door in ("cli", "api"):
        (tmp_path / door).mkdir()
        stores[door] = copy_store(tmp_path / door, migrated_db)
    cli, api = (fast_run(data_root, stores[door]) for door in ("cli", "api"))
    done = warm.run(
        "digitlab", *cli, "data.folds=2", "model=mlp", f"hydra.run.dir={tmp_path / 'job'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fitted = digitlab.fit(*api, "data.folds=2", "model=mlp")
    assert fitted.model is None and "cv/val_acc_mean" in fitted.metrics
    by_cli, by_api = (recorded(stores[door]["tracking_uri"]) for door in ("cli", "api"))
    assert by_cli == by_api and by_cli[0][1] == 2  # one parent with its two folds, alike


@pytest.fixture(scope="module")
def trained(data_root, migrated_db, tmp_path_factory) -> dict:
    """Two runs with logged models in one store, trained once for the tests here; each test
    copies the store's database for each door (the runs' artifacts stay shared, read only)."""
    folder = tmp_path_factory.mktemp("both-doors")
    store = copy_store(folder, migrated_db)
    runs = []
    for seed in (1, 2):
        cfg = fast_config(data_root, store, "model=mlp", "logger.log_model=true", f"seed={seed}")
        runs.append(train(cfg, output_dir=folder / f"job{seed}")["run_id"])
    return {"db": Path(store["tracking_uri"].removeprefix("sqlite:///")), "runs": runs}


def door_stores(trained: dict, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Per door: (its folder, the tracking URI of its copy of the trained store)."""
    stores = {}
    for door in DOORS:
        (tmp_path / door / "mlruns").mkdir(parents=True)
        shutil.copy(trained["db"], tmp_path / door / "mlruns" / "mlflow.db")
        stores[door] = (tmp_path / door, f"sqlite:///{tmp_path / door / 'mlruns' / 'mlflow.db'}")
    return stores


def same_everywhere(text: str, folder: Path, run_ids: list[str]) -> str:
    """``text`` with the door's folder and its new runs' ids put as placeholders."""
    text = text.replace(str(folder), "<door>")
    for number, run_id in enumerate(run_ids):
        text = text.replace(run_id, f"<new run {number}>")
    return text


def predictions_recorded(uri: str, folder: Path) -> tuple[list, list[np.ndarray]]:
    """The runs of the ``predictions`` and ``ensembles`` experiments, each as (experiment,
    name, status, params, metrics, tags, {artifact: text}) with the door's folder and the runs'
    ids as placeholders (the owner's pid and start time left out); and the arrays of their
    ``.npy`` artifacts, compared with a float tolerance (two processes' threads)."""
    client = MlflowClient(uri)
    runs = [
        (name, run)
        for name in ("predictions", "ensembles")
        if (experiment := client.get_experiment_by_name(name)) is not None
        for run in client.search_runs([experiment.experiment_id])
    ]
    ids = new_runs(uri)
    records, arrays = [], []
    for experiment, run in runs:
        files = {}
        for artifact in client.list_artifacts(run.info.run_id, "predictions") + (
            client.list_artifacts(run.info.run_id, "ensemble")
        ):
            into = folder / "downloaded" / run.info.run_id
            into.mkdir(parents=True, exist_ok=True)
            path = Path(client.download_artifacts(run.info.run_id, artifact.path, str(into)))
            if path.suffix == ".npy":
                arrays.append(np.load(path))
                files[artifact.path] = "(array)"
            else:
                files[artifact.path] = same_everywhere(path.read_text(), folder, ids)
        tags = {
            key: same_everywhere(value, folder, ids)
            for key, value in run.data.tags.items()
            if key not in (PID_TAG, START_TAG)
        }
        records.append(
            (
                experiment,
                run.info.run_name,
                run.info.status,
                run.data.params,
                run.data.metrics,
                tags,
                files,
            )
        )
    return sorted(records, key=repr), arrays


def predict_through_both_doors(trained, tmp_path, runs: list[str], data_root: Path) -> dict:
    """``digitlab-predict --run RUNS --data mnist`` and ``digitlab.predict`` with the same
    arguments, each on its own copy of the store: per door, (recorded, arrays, printed lines)."""
    stores = door_stores(trained, tmp_path)
    folder, uri = stores["cli"]
    done = warm.run(
        "digitlab.cli.predict",
        "--run",
        *runs,
        "--data",
        "mnist",
        "--root",
        str(data_root),
        "--out",
        str(folder / "out" / "p.npy"),
        "--tracking-uri",
        uri,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answered = {"cli": done.stdout.splitlines()}
    folder, uri = stores["api"]
    result = digitlab.predict(
        run_id=runs, data="mnist", root=data_root, out=folder / "out" / "p.npy", tracking_uri=uri
    )
    assert isinstance(result, digitlab.Prediction) and result.probabilities.is_file()
    answered["api"] = summary(result)
    seen = {}
    for door, (folder, uri) in stores.items():
        recorded, arrays = predictions_recorded(uri, folder)
        lines = [same_everywhere(line, folder, new_runs(uri)) for line in answered[door]]
        written = np.load(folder / "out" / "p.npy")
        seen[door] = (recorded, [written, *arrays], lines)
    return seen


def new_runs(uri: str) -> list[str]:
    """The ids of the runs a door added (of the experiments other than training's), oldest
    first."""
    client = MlflowClient(uri)
    added = [e.experiment_id for e in client.search_experiments() if e.name != "digitlab"]
    found = client.search_runs(added, order_by=["attributes.start_time ASC"]) if added else []
    return [run.info.run_id for run in found]


def assert_same(seen: dict) -> None:
    (cli_recorded, cli_arrays, cli_lines), (api_recorded, api_arrays, api_lines) = (
        seen["cli"],
        seen["api"],
    )
    assert cli_recorded == api_recorded
    assert cli_lines == api_lines
    assert len(cli_arrays) == len(api_arrays) > 1
    for by_cli, by_api in zip(cli_arrays, api_arrays, strict=True):
        np.testing.assert_allclose(by_cli, by_api, atol=1e-6)


@pytest.mark.slow
def test_predicting_with_one_run_is_the_same_job_through_both_doors(trained, data_root, tmp_path):
    seen = predict_through_both_doors(trained, tmp_path, trained["runs"][:1], data_root)
    assert_same(seen)
    ((experiment, _, status, *_),) = seen["cli"][0]  # one run, of its own experiment
    assert (experiment, status) == ("predictions", "FINISHED")


@pytest.mark.slow
def test_predicting_with_an_ensemble_is_the_same_job_through_both_doors(
    trained, data_root, tmp_path
):
    seen = predict_through_both_doors(trained, tmp_path, trained["runs"], data_root)
    assert_same(seen)
    ((experiment, name, *_, files),) = seen["cli"][0]
    assert (experiment, name) == ("ensembles", "ensemble-2-mean")
    assert "ensemble/members.csv" in files


def registry_recorded(uri: str) -> list:
    """Each registered model: its name, aliases and versions (version, run, source, status)."""
    client = MlflowClient(uri)
    return sorted(
        (
            model.name,
            sorted(model.aliases.items()),
            sorted(
                (v.version, v.run_id, v.source, v.status)
                for v in client.search_model_versions(f"name = '{model.name}'")
            ),
        )
        for model in client.search_registered_models()
    )


@pytest.mark.slow
def test_registering_is_the_same_job_through_both_doors(trained, tmp_path):
    """Both runs, then the first again (no new version): the same versions, the same ``@best``,
    and the command prints the line of the Registration that the API returns."""
    stores = door_stores(trained, tmp_path)
    first, second = trained["runs"]
    printed, answered = [], []
    for run_id in (first, second, first):
        done = warm.run(
            "digitlab.cli.register", run_id, "--name", "digits", "--tracking-uri", stores["cli"][1]
        )
        assert done.returncode == 0, done.stderr[-3000:]
        printed.append(done.stdout)
        registration = digitlab.register(run_id, "digits", tracking_uri=stores["api"][1])
        assert isinstance(registration, digitlab.Registration)
        answered.append(f"digitlab: {registration.line()}\n")
    assert printed == answered and "already models:/digits/1" in answered[2]
    by_cli, by_api = (registry_recorded(stores[door][1]) for door in DOORS)
    assert by_cli == by_api
    ((name, aliases, versions),) = by_cli
    assert name == "digits" and len(versions) == 2 and str(dict(aliases)["best"]) in ("1", "2")
