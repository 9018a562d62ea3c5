"""Assemble one run from its config: data, network, optimizer, trainer, MLflow run; fit and test."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
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
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    if logging.getLogger().handlers:  # Hydra has configured logging: no second console handler
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def check_accelerator(name: str) -> None:
    """Fail early, in one line, when the requested accelerator is not on this machine."""
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DigitlabError(
            f"trainer.accelerator={name} but PyTorch sees no CUDA GPU on this machine: "
            "use trainer.accelerator=cpu (or auto)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise DigitlabError(
            "trainer.accelerator=mps but no Apple MPS device is available: "
            "use trainer.accelerator=cpu (or auto)"
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
        augment=instantiate(data.augment) if data.get("augment") else None,
    )


def build_module(cfg: DictConfig) -> DigitClassifier:
    # data.resize is authoritative: the model is built for the images the data module serves.
    net = instantiate(cfg.model, input_size=cfg.data.resize)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return DigitClassifier(net, optimizer, config=OmegaConf.to_container(cfg, resolve=True),
                           scheduler=scheduler)


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
        ``{"run_id", "run_name", "metrics": {name: float}, "seconds", "best_checkpoint"}``.
    """
    started = time.perf_counter()
    quiet_lightning()
    check_config(cfg)
    check_accelerator(cfg.trainer.accelerator)
    choices = {k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")}
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="digitlab-"))
    resolved = OmegaConf.to_container(cfg, resolve=True)

    log_cfg = cfg.logger
    client = tracking.open_client(log_cfg.tracking_uri)
    experiment_id = tracking.get_or_create_experiment(
        client, log_cfg.experiment_name, log_cfg.artifact_location
    )
    name = log_cfg.run_name or tracking.run_name(choices, cfg.seed)
    tags = {f"choice.{group}": str(option) for group, option in choices.items()}
    tags.update(tracking.sweep_tags())
    if commit := tracking.git_commit(project_root()):
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        tracking.log_params(client, run_id, tracking.flatten(resolved))
        client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg)
        checkpoint = ModelCheckpoint(
            dirpath=output_dir / "checkpoints", filename="best", monitor="val/acc", mode="max",
            save_last=True,
        )
        trainer = L.Trainer(
            **cfg.trainer,
            logger=MLFlowLogger(tracking_uri=log_cfg.tracking_uri, run_id=run_id),
            callbacks=[checkpoint, EpochThroughput()],
            default_root_dir=output_dir,
        )
        trainer.fit(module, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test_after_fit:
            (tested,) = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
            metrics.update({k: float(v) for k, v in tested.items()})
        if log_cfg.log_checkpoint and checkpoint.best_model_path:
            client.log_artifact(run_id, checkpoint.best_model_path, "checkpoints")
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status)
    return {
        "run_id": run_id,
        "run_name": name,
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
        "best_checkpoint": checkpoint.best_model_path,
    }
