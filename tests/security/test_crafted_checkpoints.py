"""Crafted checkpoints and MLflow models, built here as an attacker would, against every entry
point that loads one: each is refused in one line, and the marker file it would write never
appears. Each case also runs on purpose where the code *is* reached (trust given by the user),
so that a marker check that could never fire would show.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import warm
from conftest import copy_store, fast_config
from digitlab.errors import DigitlabError
from digitlab.training.run import train

MARKER_MODULE = """
import os
from pathlib import Path

from digitlab.models import MLP


def build(**settings):
    Path(os.environ["DIGITLAB_TEST_MARKER"]).write_text("called")  # proof that it ran
    return MLP(**settings)
"""


class _OpensMarker:
    """Pickled, it is a call of ``open(marker, "w")``: unpickling it creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_models(marker: Path) -> dict[str, dict]:
    """Saved ``model`` configs that reach code through names under allowed packages."""
    payload = pickle.dumps(_OpensMarker(marker))
    pickled = marker.with_name("payload.pkl")
    if pickled.parent.is_dir():
        pickled.write_bytes(payload)
    return {
        # Hydra's _locate walks attributes: any digitlab module that imported logging reaches it.
        "attribute path to logging.basicConfig": {
            "_target_": "digitlab.cli.train.logging.basicConfig",
            "filename": str(marker),
            "force": True,
        },
        # torch.load with weights_only=False over pickle bytes held in the config itself: the
        # outer file passes the weights-only read, the inner load runs the payload.
        "torch.load of nested pickle bytes": {
            "_target_": "digitlab.models.mlp.torch.load",
            "weights_only": False,
            "f": {
                "_target_": "digitlab.models.mlp.torch.serialization.io.BytesIO",
                "initial_bytes": payload,
            },
        },
        "torch.load of a pickle file": {
            "_target_": "digitlab.models.mlp.torch.load",
            "f": str(pickled),
            "weights_only": False,
        },
        # No _target_ in the text, one after OmegaConf resolves the string.
        "interpolation that creates a nested call": {
            "_target_": "digitlab.models.MLP",
            "hidden": "${oc.create:\"{_target_: builtins.open, file: '"
            + str(marker)
            + "', mode: w}\"}",
        },
        "a network named outside the allowed packages": {
            "_target_": "builtins.open",
            "file": str(marker),
            "mode": "w",
        },
    }


CASES = list(crafted_models(Path("/nonexistent/marker")))


@pytest.fixture(scope="module")
def genuine(data_root, migrated_db, tmp_path_factory):
    """A tiny MLP trained once, its model logged: (result, cfg)."""
    folder = tmp_path_factory.mktemp("genuine")
    cfg = fast_config(
        data_root, copy_store(folder, migrated_db), "model=mlp", "logger.log_model=true"
    )
    return train(cfg, output_dir=folder / "job"), cfg


def craft_checkpoint(genuine, folder: Path, model: dict, **config) -> Path:
    """The genuine best checkpoint with its saved model config replaced by ``model``."""
    checkpoint = torch.load(genuine[0]["best_checkpoint"], weights_only=True)
    checkpoint["hyper_parameters"]["config"]["model"] = model
    checkpoint["hyper_parameters"]["config"].update(config)
    path = folder / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def log_crafted_run(genuine, checkpoint: Path) -> str:
    """A run of the genuine store whose logged checkpoint is ``checkpoint``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(genuine[1].logger.tracking_uri)
    experiment = client.get_run(genuine[0]["run_id"]).info.experiment_id
    run = client.create_run(experiment, run_name="crafted")
    client.log_artifact(run.info.run_id, str(checkpoint), "checkpoints")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_crafted_model(genuine, data: Path, **options) -> str:
    """An MLflow model with digitlab's loader and ``data`` as its checkpoint; ``options`` go to
    ``mlflow.pyfunc.log_model`` (code_paths, model_config). Returns its runs:/ URI."""
    import mlflow

    from digitlab.training.logged_model import LOADER

    mlflow.set_tracking_uri(genuine[1].logger.tracking_uri)
    experiment = mlflow.get_run(genuine[0]["run_id"]).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name="crafted-model") as run:
        mlflow.pyfunc.log_model(
            name="model", loader_module=LOADER, data_path=str(data), pip_requirements=[], **options
        )
    return f"runs:/{run.info.run_id}/model"


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("digitlab: error: "), text[-3000:]
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_checkpoint_is_refused_by_every_loader(genuine, tmp_path, case):
    from digitlab.api.model import load
    from digitlab.training.checkpoints import network_from_checkpoint

    marker = tmp_path / "marker"
    path = craft_checkpoint(genuine, tmp_path, crafted_models(marker)[case])
    with pytest.raises(DigitlabError, match="refused, nothing was run") as refused:
        network_from_checkpoint(path)
    assert "\n" not in str(refused.value)
    run_id = log_crafted_run(genuine, path)
    with pytest.raises(DigitlabError, match="refused, nothing was run"):
        load(run_id, tracking_uri=genuine[1].logger.tracking_uri)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_digitlab_predict_refuses_a_crafted_checkpoint_in_one_line(genuine, tmp_path, case):
    marker = tmp_path / "marker"
    path = craft_checkpoint(genuine, tmp_path, crafted_models(marker)[case])
    result = warm.run(
        "digitlab.cli.predict",
        "--checkpoint",
        str(path),
        "--data",
        "mnist",
        "--root",
        str(genuine[1].data.root),
        "--out",
        str(tmp_path / "p.npy"),
    )
    assert result.returncode == 1
    line = one_line(result.stdout + result.stderr)
    assert line.startswith(f"digitlab: error: checkpoint {path}") and line.endswith(
        ("refused, nothing was run", "trusted_targets=[MODULE]")
    ), line
    assert "refused, nothing was run" in line
    assert not marker.exists() and not (tmp_path / "p.npy").exists()


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_mlflow_model_is_refused_by_serve_and_by_plain_mlflow(genuine, tmp_path, case):
    import mlflow

    from digitlab.serving.models import ModelCache

    marker = tmp_path / "marker"
    path = craft_checkpoint(genuine, tmp_path, crafted_models(marker)[case])
    uri = log_crafted_model(genuine, path)
    with pytest.raises(DigitlabError, match="refused, nothing was run"):
        ModelCache(genuine[1].logger.tracking_uri).get(uri)
    with pytest.raises(DigitlabError, match="refused, nothing was run"):
        mlflow.pyfunc.load_model(uri)
    assert not marker.exists()


def _marker_package(folder: Path) -> Path:
    package = folder / "pkg"
    package.mkdir()
    (package / "crafted_marker.py").write_text(MARKER_MODULE)
    return package


def test_a_model_that_trusts_itself_is_refused_and_the_users_trust_reaches_the_loader(
    genuine, tmp_path, monkeypatch
):
    """An MLmodel whose own model_config trusts the module its recipe names: refused by serve's
    loader and by plain MLflow; the same recipe trusted by the user (--trust, DIGITLAB_TRUST)
    loads and runs it, so the refusal is the check's doing."""
    import mlflow

    from digitlab.serving.models import ModelCache

    marker = tmp_path / "marker"
    monkeypatch.syspath_prepend(str(_marker_package(tmp_path)))
    monkeypatch.setenv("DIGITLAB_TEST_MARKER", str(marker))
    model = {**OmegaConf.to_container(genuine[1].model), "_target_": "crafted_marker.build"}
    path = craft_checkpoint(genuine, tmp_path, model, trusted_targets=["crafted_marker"])
    self_trusting = log_crafted_model(genuine, path, model_config={"trust": ["crafted_marker"]})
    uri = genuine[1].logger.tracking_uri
    with pytest.raises(DigitlabError, match="model_config of its own .*refused"):
        ModelCache(uri, trusted=("crafted_marker",)).get(self_trusting)
    with pytest.raises(DigitlabError, match="asks to trust .*itself: refused"):
        mlflow.pyfunc.load_model(self_trusting)
    with pytest.raises(DigitlabError, match="crafted_marker.build, which is not trusted code"):
        ModelCache(uri).get(log_crafted_model(genuine, path))
    assert not marker.exists()

    plain = log_crafted_model(genuine, path)
    ModelCache(uri, trusted=("crafted_marker",)).get(plain)  # the user's --trust reaches it
    assert marker.read_text() == "called"
    marker.unlink()
    monkeypatch.setenv("DIGITLAB_TRUST", "crafted_marker")
    mlflow.pyfunc.load_model(plain)
    assert marker.read_text() == "called"


CODE_PATH_MODEL = """
import sys

import mlflow

from digitlab.serving.models import ModelCache

cache = ModelCache(sys.argv[1])
try:
    cache.get(sys.argv[2])
except Exception as e:
    print(type(e).__name__, e)
try:
    mlflow.pyfunc.load_model(sys.argv[2])
except Exception as e:
    print(type(e).__name__, e)
"""


@pytest.mark.slow
def test_a_model_with_code_paths_never_runs_them(genuine, tmp_path):
    """A digitlab model logged with code_paths holding a package ``torch``: MLflow puts them first
    on sys.path, so a process that has not imported torch yet would import the model's. In a new
    interpreter (torch not imported), serve's loader refuses it before MLflow sees it, and plain
    MLflow's call of digitlab's loader takes the path off again and refuses: torch is the real
    one."""
    marker = tmp_path / "marker"
    code = tmp_path / "code" / "torch"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    )
    slim = tmp_path / "network.ckpt"
    checkpoint = torch.load(genuine[0]["best_checkpoint"], weights_only=True)
    torch.save(
        {
            "state_dict": {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()},
            "hyper_parameters": checkpoint["hyper_parameters"],
        },
        slim,
    )
    uri = log_crafted_model(genuine, slim, code_paths=[str(code)])
    result = subprocess.run(
        [sys.executable, "-c", CODE_PATH_MODEL, genuine[1].logger.tracking_uri, uri],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("RefusedModel ") and "carries code_paths" in lines[0], lines
    assert lines[1].startswith("DigitlabError ") and "carries code_paths" in lines[1], lines
    assert not marker.exists()


@pytest.mark.slow
def test_digitlab_serve_refuses_a_model_with_code_paths_in_one_line(genuine, tmp_path):
    marker = tmp_path / "marker"
    code = tmp_path / "code" / "payload"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    uri = log_crafted_model(genuine, Path(genuine[0]["best_checkpoint"]), code_paths=[str(code)])
    result = warm.run(
        "digitlab.cli.serve",
        "--port",
        "0",
        "--tracking-uri",
        genuine[1].logger.tracking_uri,
        "--model",
        uri,
    )
    assert result.returncode == 1
    line = one_line(result.stdout + result.stderr)
    assert f"{uri} carries code_paths" in line
    assert not marker.exists()


def test_a_request_picks_only_the_models_the_server_was_started_with(genuine, tmp_path):
    """``?model=`` naming another model of the store (here a crafted one) is a 404 that loads
    nothing; /models offers only what the operator served. ``--any-model`` (allowed=None)
    lets requests pick any digitlab model, which the loader's checks still refuse."""
    import json
    import threading
    import urllib.error
    import urllib.request

    from digitlab.serving.models import ModelCache
    from digitlab.serving.server import make_server
    from digitlab.tracking.store import open_client

    marker = tmp_path / "marker"
    crafted = log_crafted_model(
        genuine,
        craft_checkpoint(
            genuine, tmp_path, crafted_models(marker)["attribute path to logging.basicConfig"]
        ),
    )
    served = f"runs:/{genuine[0]['run_id']}/model"
    tracking_uri = genuine[1].logger.tracking_uri

    def ask(cache, uri: str) -> tuple[int, dict]:
        server = make_server(open_client(tracking_uri), served, models=cache)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        request = urllib.request.Request(
            f"{url}/invocations?model={uri}",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": [[0] * 784]}).encode(),
        )
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=60) as answer:
                offered = [m["uri"] for m in json.loads(answer.read())["models"]]
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, {"offered": offered, **json.loads(answer.read())}
        except urllib.error.HTTPError as e:
            return e.code, {"offered": offered, **json.loads(e.read())}
        finally:
            server.shutdown()
            server.server_close()

    only = ModelCache(tracking_uri, allowed=(served,))
    status, body = ask(only, crafted)
    assert status == 404 and f"model {crafted} is not served here" in body["message"]
    assert body["offered"] == [served] and not marker.exists()  # never loaded
    assert ask(only, served)[0] == 200
    status, body = ask(ModelCache(tracking_uri, allowed=None), crafted)
    assert status == 400 and "refused, nothing was run" in body["message"], body
    assert crafted in body["offered"] and not marker.exists()


def test_a_saved_data_source_never_downloads_into_a_folder_it_names(tmp_path):
    """``--data holdout`` rebuilds the runs' data source from their saved config: one naming a
    victim folder, downloads on and its own mirror is read without downloading: one line, and
    nothing is written there (no folder, no file, no connection to the mirror)."""
    from digitlab.jobs.inputs import holdout_images

    victim = tmp_path / "victim"
    victim.mkdir()
    config = {
        "seed": 1,
        "data": {
            "val_size": 40,
            "source": {
                "_target_": "digitlab.data.sources.load_mnist",
                "root": str(victim),
                "download": True,
                "mirrors": ["http://127.0.0.1:9/"],
            },
        },
    }
    command_root = tmp_path / "command-root"  # where this command reads (--root), empty
    command_root.mkdir()
    with pytest.raises(DigitlabError, match="MNIST/raw does not exist") as refused:
        holdout_images([("crafted.ckpt", config)], command_root)
    assert "\n" not in str(refused.value) and "127.0.0.1:9" not in str(refused.value)
    assert list(victim.iterdir()) == [] and list(command_root.iterdir()) == []
