"""Every model x data pair trains into a temp MLflow store; the run, params, metrics and
checkpoint."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import checkpoint_accuracy
from digitlab.config import CONF_DIR, config_groups
from digitlab.training.run import train

# Every option of the groups: a new model or data set is trained here without a test edit.
MODELS = config_groups(CONF_DIR)["model"]
DATA = config_groups(CONF_DIR)["data"]
EPOCH_METRICS = ["train/loss", "train/acc", "val/loss", "val/acc", "train/samples_per_sec"]


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_every_data_set(make_cfg, tmp_path, model, data):
    cfg = make_cfg(f"model={model}", f"data={data}", "trainer.limit_train_batches=3")
    choices = {"model": model, "data": data, "optimizer": "sgd"}
    result = train(cfg, output_dir=tmp_path / "job", choices=choices)

    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{model}-{data}-sgd-s42"
    assert run.data.tags["choice.model"] == model
    assert run.data.params["model._target_"] == cfg.model._target_
    assert run.data.params["data.batch_size"] == "32"
    assert run.data.params["optimizer.lr"] == str(cfg.optimizer.lr)
    for name in [*EPOCH_METRICS, "test/loss", "test/acc"]:
        assert name in run.data.metrics, name
    # test/acc is the best checkpoint's accuracy on the test split, recomputed independently.
    expected = checkpoint_accuracy(result["best_checkpoint"], cfg)
    assert run.data.metrics["test/acc"] == pytest.approx(expected, abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"config.yaml", "checkpoints"} <= artifacts


def test_checkpoint_loads_weights_only_and_rebuilds_the_network(make_cfg, tmp_path):
    from digitlab.training.checkpoints import network_from_checkpoint

    cfg = make_cfg("model=lenet5", "trainer.limit_train_batches=2")
    result = train(cfg, output_dir=tmp_path)
    checkpoint = torch.load(result["best_checkpoint"], weights_only=True, map_location="cpu")
    net, config = network_from_checkpoint(result["best_checkpoint"])
    assert config["model"]["channels"] == [6, 16] and config["model"]["input_size"] == 32
    assert "resize" not in config["data"]  # one size key: model.input_size
    saved = {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_training_learns_the_synthetic_digits(make_cfg, tmp_path):
    """Accuracy rises far above chance: the whole path from file to loss is wired right."""
    cfg = make_cfg("model=mlp", "trainer.max_epochs=8", "optimizer=adam", "optimizer.lr=0.01")
    result = train(cfg, output_dir=tmp_path)
    assert result["metrics"]["test/acc"] > 0.6


def test_a_failing_run_is_marked_failed(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("model=mlp")

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("lightning.Trainer.fit", explode)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, output_dir=tmp_path)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FAILED"
