"""A finished run logs its best network as an MLflow Model: signature, input example, raw-pixel
input, the same probabilities as digitlab-predict, loaded in a fresh process without pickle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_store, fast_config
from digitlab.jobs.predict import predict
from digitlab.serving.model import BadInput, as_pixels
from digitlab.training.run import train

LOAD_AND_PREDICT = """
import sys, numpy as np, mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(np.load(sys.argv[3]))
np.save(sys.argv[4], out["probabilities"])
"""


@pytest.fixture(scope="module")
def run(data_root, migrated_db, tmp_path_factory):
    """One run with a logged model, trained once for the tests here (they only read it)."""
    folder = tmp_path_factory.mktemp("logged_model")
    cfg = fast_config(
        data_root, copy_store(folder, migrated_db), "model=mlp", "logger.log_model=true"
    )
    result = train(cfg, output_dir=folder / "job", choices={"model": "mlp"})
    return result, cfg


@pytest.fixture
def fluent_uri(run):
    """MLflow resolves a runs:/ URI in this process through its global tracking URI (training
    leaves that alone): set to the run's store for the test, then put back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")  # set_tracking_uri sets it as well
    mlflow.set_tracking_uri(run[1].logger.tracking_uri)
    yield
    mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets it


def test_run_logs_a_model_with_signature_example_and_metrics(run, fluent_uri):
    result, cfg = run
    client = MlflowClient(cfg.logger.tracking_uri)
    (model,) = client.search_logged_models(
        experiment_ids=[client.get_run(result["run_id"]).info.experiment_id]
    )
    assert model.source_run_id == result["run_id"] and model.name == "model"
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["test/acc"] == pytest.approx(result["metrics"]["test/acc"])
    from mlflow.models import Model

    info = Model.load(f"runs:/{result['run_id']}/model")
    spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert (spec["dtype"], list(spec["shape"])) == ("uint8", [-1, 28, 28])
    assert [o["name"] for o in info.signature.outputs.to_dict()] == [
        "probabilities",
        "digit",
        "confidence",
        "unsure",
    ]
    assert info.saved_input_example_info is not None
    assert info.flavors["python_function"]["loader_module"] == "digitlab.serving.model"
    # The run's status is its own, not left RUNNING or changed by logging the model.
    assert client.get_run(result["run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_model_loads_in_a_fresh_process_and_matches_predict(run, data_root, tmp_path):
    result, cfg = run
    offline = predict(
        checkpoint=result["best_checkpoint"],
        data="mnist",
        root=data_root,
        out=tmp_path / "offline.npy",
    )
    from digitlab.data.sources import load_mnist

    images = load_mnist(data_root, download=False).test_images.numpy()
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_PREDICT,
            cfg.logger.tracking_uri,
            f"runs:/{result['run_id']}/model",
            str(tmp_path / "images.npy"),
            str(tmp_path / "served.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.load(tmp_path / "served.npy")
    assert served.shape == (len(images), 10)
    np.testing.assert_allclose(served, np.load(offline.probabilities), atol=1e-6)


def test_loading_never_unpickles_objects(run, fluent_uri, tmp_path):
    """The model's data loads with torch.load(weights_only=True): a pickled object is refused."""
    import torch
    from mlflow.artifacts import download_artifacts

    result, cfg = run
    folder = download_artifacts(
        f"runs:/{result['run_id']}/model",
        dst_path=str(tmp_path / "m"),
        tracking_uri=cfg.logger.tracking_uri,
    )
    (data,) = (tmp_path / "m").rglob("network.ckpt")
    torch.load(data, weights_only=True)  # plain tensors and values only
    assert not list((tmp_path / "m").rglob("*.pkl")), folder


@pytest.mark.parametrize(
    "pixels", [np.zeros((2, 28, 28), np.uint8), np.full((3, 784), 255.0), [[0] * 784]]
)
def test_raw_pixel_layouts_are_accepted(pixels):
    out = as_pixels(pixels)
    assert out.dtype == np.uint8 and out.shape[1:] == (28, 28)


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.zeros((2, 27, 28)), "shape"),
        (np.zeros((2, 783)), "shape"),
        (np.full((1, 784), 256.0), "0..255"),
        (np.full((1, 784), -1), "0..255"),
        (np.full((1, 784), np.nan), "NaN"),
        (np.array([["a"] * 784]), "not numbers"),
        (np.zeros((0, 784)), "1 to"),
    ],
)
def test_bad_pixels_are_one_line(pixels, reason):
    with pytest.raises(BadInput, match=reason) as caught:
        as_pixels(pixels)
    assert "\n" not in str(caught.value)
    json.dumps(str(caught.value))
