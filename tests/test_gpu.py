"""The GPU paths, run wherever CUDA is present (skipped, saying so, elsewhere): bf16 training,
device-resident data, DDP on one GPU."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from conftest import checkpoint_accuracy
from digitlab.training.build import build_datamodule
from digitlab.training.run import train

pytestmark = pytest.mark.gpu


def test_bf16_training_on_the_gpu_matches_its_own_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=lenet",
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=2",
    )
    result = train(cfg, output_dir=tmp_path)
    run = MlflowClient(cfg.logger.tracking_uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["trainer.precision"] == "bf16-mixed"
    # bf16 autocast on the GPU against float32 on the CPU: predictions may differ at the margin.
    assert (
        abs(run.data.metrics["test/acc"] - checkpoint_accuracy(result["best_checkpoint"], cfg))
        < 0.05
    )


def test_the_data_lives_on_the_gpu(make_cfg):
    import lightning as L

    cfg = make_cfg("model=mlp", "trainer.accelerator=gpu")
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, max_epochs=1)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    for x, y in datamodule.tensors.values():
        assert x.is_cuda and y.is_cuda  # decoded once, moved once: batches are cut on the GPU
    assert next(iter(datamodule.train_dataloader()))[0].is_cuda


def test_ddp_on_one_gpu_records_one_finished_run(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=mlp",
        "trainer=ddp",
        "trainer.accelerator=gpu",
        "trainer.devices=1",
        "trainer.strategy=ddp_spawn",
    )
    result = train(cfg, output_dir=tmp_path)
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] and result["run_id"] == runs[0].info.run_id
