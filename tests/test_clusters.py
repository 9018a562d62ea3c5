"""Cluster launching: a 2-job sweep through submitit's local executor; DDP refused in -m sweeps."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from digitlab.config import CONF_DIR
from digitlab.errors import DigitlabError
from digitlab.training.build import check_launcher


def test_slurm_launcher_config_names_partition_gpus_time_and_memory():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                 "hydra.launcher.partition=gpu"], return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # one SLURM task per device
    assert launcher.nodes == 1
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0


@pytest.mark.slow
def test_local_submitit_sweep_runs_both_jobs(data_root, store, tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "digitlab", "-m", "hydra/launcher=local", "model=mlp", "seed=1,2",
         f"data.root={data_root}", "data.val_size=40", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
         "trainer.enable_progress_bar=false", "figures.enabled=false",
         f"logger.tracking_uri={store['tracking_uri']}",
         f"logger.artifact_location={store['artifact_location']}", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "DIGITLAB_ROOT": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep_dir / ".submitit").is_dir()  # the jobs went through submitit
    client = MlflowClient(store["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    assert {"mlp-mnist-sgd-s1", "mlp-mnist-sgd-s2"} <= finished
    assert all(r.info.status == "FINISHED" for r in runs)  # a sweep's parent run, if any, too


@pytest.mark.parametrize(("strategy", "refused"), [("ddp", True), ("ddp_spawn", False)])
def test_ddp_that_reruns_the_command_is_refused_in_a_sweep(strategy, refused):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["trainer=ddp"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        trainer = L.Trainer(strategy=strategy, devices=2, accelerator="cpu", logger=False)
        if refused:
            with pytest.raises(DigitlabError, match="trainer.strategy=ddp_spawn"):
                check_launcher(trainer)
        else:
            check_launcher(trainer)
    finally:
        HydraConfig.instance().cfg = None
