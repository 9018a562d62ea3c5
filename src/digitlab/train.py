"""Assemble one run from its config: data, network, optimizer, trainer, MLflow run; fit and test."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf

from digitlab import tracking
from digitlab.callbacks import EpochThroughput
from digitlab.checks import check_config
from digitlab.config import project_root
from digitlab.data.datamodule import DigitDataModule
from digitlab.errors import DigitlabError
from digitlab.module import DigitClassifier


def quiet_lightning() -> None:
    """Lightning's start-up lines once (Hydra already prints them), without its advertising tip."""
    # Under DDP our epoch metrics are already global: torchmetrics' compute() gathers every
    # rank's state, so Lightning's advice to add sync_dist=True (average again) does not apply.
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self.log\('(train|val|test)/",
        category=PossibleUserWarning,
    )
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    if logging.getLogger().handlers:  # Hydra has configured logging: no second console handler
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def check_accelerator(name: str, devices: Any = 1) -> None:
    """Fail early, in one line, when the requested accelerator is not on this machine."""
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DigitlabError(
            f"trainer.accelerator={name} but PyTorch sees no CUDA GPU on this machine: "
            "use trainer.accelerator=cpu (or auto)"
        )
    gpus = torch.cuda.device_count()
    uses_gpus = name in ("gpu", "cuda") or (name == "auto" and gpus > 0)
    if uses_gpus and isinstance(devices, int) and not isinstance(devices, bool) and devices > gpus:
        raise DigitlabError(
            f"trainer.devices={devices} but this machine has {gpus} GPU(s): use "
            f"trainer.devices={gpus}, or trainer.accelerator=cpu for {devices} CPU processes"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise DigitlabError(
            "trainer.accelerator=mps but no Apple MPS device is available: "
            "use trainer.accelerator=cpu (or auto)"
        )


def check_launcher(trainer: L.Trainer) -> None:
    """Refuse Lightning's ``ddp`` launcher inside a ``-m`` sweep, in one line with the fix.

    That launcher starts the extra processes by re-running the command line, which in a sweep
    would start the whole sweep again in every extra process. ``ddp_spawn`` starts its processes
    from inside this one; SLURM (``hydra/launcher=slurm``) starts one task per device itself.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    strategy = trainer.strategy
    environment = getattr(strategy, "cluster_environment", None)
    if (
        type(strategy.launcher).__name__ == "_SubprocessScriptLauncher"
        and environment is not None
        and not environment.creates_processes_externally
        and HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.MULTIRUN
    ):
        raise DigitlabError(
            "trainer.strategy=ddp re-runs the command for each extra process, which a -m sweep "
            "cannot do: use trainer.strategy=ddp_spawn in sweeps on one machine"
        )


def build_datamodule(cfg: DictConfig) -> DigitDataModule:
    data = cfg.data
    return DigitDataModule(
        load=instantiate(data.source, _partial_=True),
        val_size=data.val_size,
        test_size=data.test_size,
        batch_size=data.batch_size,
        eval_batch_size=data.eval_batch_size,
        scale=data.scale,
        mean=data.mean,
        std=data.std,
        resize=data.resize,
        seed=cfg.seed,
    )


def build_module(cfg: DictConfig) -> DigitClassifier:
    # data.resize is authoritative: the model is built for the images the data module serves.
    net = instantiate(cfg.model, input_size=cfg.data.resize)
    optimizer = instantiate(cfg.optimizer)
    return DigitClassifier(net, optimizer, config=OmegaConf.to_container(cfg, resolve=True))


def train(
    cfg: DictConfig,
    output_dir: str | Path | None = None,
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit and test one configuration, recorded as one MLflow run.

    Args:
        cfg: the composed config (``conf/config.yaml`` and its groups).
        output_dir: where checkpoints go (Hydra's job folder); a temporary folder if None.
        choices: the chosen option per config group (Hydra's ``runtime.choices``), for the run
            name and tags.

    Returns:
        ``{"run_id", "run_name", "metrics": {name: float}, "seconds", "best_checkpoint"}``;
        ``run_id`` is None in the DDP processes other than rank 0 (they record nothing).
    """
    started = time.perf_counter()
    quiet_lightning()
    check_config(cfg)
    check_accelerator(cfg.trainer.accelerator, cfg.trainer.devices)
    choices = {k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")}
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="digitlab-"))
    resolved = OmegaConf.to_container(cfg, resolve=True)

    log_cfg = cfg.logger
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="best", monitor="val/acc", mode="max",
        save_last=True,
    )
    # The Trainer comes before the MLflow run: under DDP every process runs this function, and
    # the Trainer reads this process's global rank from the launcher (Lightning's re-run of the
    # command, SLURM, torchrun). Rank 0 alone creates and records the run.
    trainer = L.Trainer(
        **cfg.trainer, logger=False, callbacks=[checkpoint, EpochThroughput()],
        default_root_dir=output_dir,
    )
    check_launcher(trainer)
    owner = trainer.is_global_zero
    name = log_cfg.run_name or tracking.run_name(choices, cfg.seed)
    client = run_id = None
    if owner:
        client = tracking.open_client(log_cfg.tracking_uri)
        experiment_id = tracking.get_or_create_experiment(
            client, log_cfg.experiment_name, tracking.artifact_root(log_cfg)
        )
        tags = {f"choice.{group}": str(option) for group, option in choices.items()}
        if commit := tracking.git_commit(project_root()):
            tags["mlflow.source.git.commit"] = commit
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    trainer.logger = MLFlowLogger(tracking_uri=log_cfg.tracking_uri, run_id=run_id)
    status = "FAILED"
    try:
        if owner:
            tracking.log_params(client, run_id, tracking.flatten(resolved))
            client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        datamodule = build_datamodule(cfg)
        module = build_module(cfg)
        trainer.fit(module, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test_after_fit:
            (tested,) = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
            metrics.update({k: float(v) for k, v in tested.items()})
        if owner and log_cfg.log_checkpoint and checkpoint.best_model_path:
            client.log_artifact(run_id, checkpoint.best_model_path, "checkpoints")
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if owner:
            client.set_terminated(run_id, status)
    return {
        "run_id": run_id,
        "run_name": name,
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
        "best_checkpoint": checkpoint.best_model_path,
    }
