"""Cluster launching: the SLURM launcher's config; DDP refused in -m sweeps. A sweep through
submitit's local executor (hydra/launcher=local) is in test_search.py, its jobs in a study."""

from __future__ import annotations

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from digitlab.config import CONF_DIR
from digitlab.errors import DigitlabError
from digitlab.training.build import check_launcher


def test_slurm_launcher_config_names_partition_gpus_time_and_memory():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.devices=4",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # one SLURM task per device
    assert launcher.nodes == 1
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0


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
