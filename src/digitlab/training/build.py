"""Build a run's parts from its config: data module, LightningModule, callbacks, Trainer."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf

from digitlab.callbacks import StampRunId
from digitlab.config.classes import class_names
from digitlab.config.signatures import argument_names
from digitlab.config.spec import check_run, final_fit
from digitlab.config.targets import build, trusted_targets
from digitlab.data.datamodule import DigitDataModule
from digitlab.data.sources import DigitData
from digitlab.errors import DigitlabError
from digitlab.figures.callback import figure_callbacks
from digitlab.training.checkpoint_io import AtomicCheckpointIO
from digitlab.training.classifier import PLATEAU_MONITOR, DigitClassifier, steps_on_plateau
from digitlab.training.cuda_graphs import check_cuda_graphs
from digitlab.training.fused import FusedStepsClassifier


def plain(node: DictConfig) -> dict[str, Any]:
    """``node``'s values resolved into plain dicts and lists."""
    values = OmegaConf.to_container(node, resolve=True)
    assert isinstance(values, dict)  # what a DictConfig converts to
    return {str(key): value for key, value in values.items()}


def quiet_lightning() -> None:
    """Lightning's start-up lines once (Hydra already prints them), without its advertising tip
    and the warnings about what digitlab does on purpose or cannot change."""
    # Under DDP our epoch metrics are already global: torchmetrics' compute() gathers every
    # rank's state, so Lightning's advice to add sync_dist=True (average again) does not apply.
    warnings.filterwarnings(
        "ignore",
        message=r"It is recommended to use `self.log\('(train|val|test)/",
        category=PossibleUserWarning,
    )
    # The module logs per epoch only, so the step-logging interval has nothing to log.
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
    )
    # best.ckpt's callback comes first on purpose: "best" means the best validation accuracy.
    warnings.filterwarnings(
        "ignore",
        message=r'`\.test\(ckpt_path="best"\)` is called with Trainer configured with multiple',
    )
    # Lightning's pytree shim uses what torch now deprecates: a notice for Lightning's
    # maintainers, which the command line leaves out with every dependency's deprecation notice
    # (digitlab.cli); from Python (digitlab.fit) this one alone, other warnings still show.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in rank_zero.filters:
        rank_zero.addFilter(_not_a_tip)
    if logging.getLogger().handlers:  # Hydra has configured logging: no second console handler
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def set_matmul_precision(cfg: DictConfig) -> None:
    """The config's ``float32_matmul_precision`` on a CUDA GPU (``high``: TF32 tensor cores),
    said here rather than left to Lightning's hint on every run."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))


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


def build_datamodule(cfg: DictConfig, loaded: DigitData | None = None) -> DigitDataModule:
    """The ``data`` node's data module, given the run's seed and the model's input size;
    ``loaded``: the data set the command line already read (before importing torch)."""
    node = plain(cfg.data)
    # A run stored before the data node named its class is resumed with the class it trained
    # with, its readers called by the data module with this command's root.
    node.setdefault("_target_", "digitlab.data.datamodule.DigitDataModule")
    trusted = trusted_targets(cfg)
    for key in ("source", "predict"):
        if isinstance(node.get(key), dict):
            node[key] = {**node[key], "_partial_": True}
            node[key].pop("root", None)
    given: dict[str, Any] = dict(seed=cfg.seed, resize=cfg.model.get("input_size", 28))
    if loaded is not None:
        node["source"] = None
        given["source"] = lambda **_: loaded
    try:
        return build(node, "data module", trusted, path="data.", **given)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, DigitlabError):
            raise cause from None
        raise DigitlabError(
            f"cannot build the data module: {str(cause).splitlines()[0]} "
            "(fix or remove the data.* override; conf/data/ lists the keys)"
        ) from None


def check_plateau(interval: str, trainer: DictConfig) -> None:
    """ReduceLROnPlateau steps on the validation loss once per epoch: refuse, before the run, a
    per-step interval or a trainer that does not validate every epoch (Lightning would stop the
    run at the first epoch without the loss)."""
    if interval == "step":
        raise DigitlabError(
            "scheduler.interval=step does not suit ReduceLROnPlateau, which steps on "
            f"{PLATEAU_MONITOR} after each validation: set scheduler.interval=epoch"
        )
    for key, value in (
        ("limit_val_batches", trainer.get("limit_val_batches", 1.0)),
        ("check_val_every_n_epoch", trainer.get("check_val_every_n_epoch", 1)),
    ):
        if value == 0 or (key == "check_val_every_n_epoch" and value != 1):
            raise DigitlabError(
                f"trainer.{key}={value} leaves ReduceLROnPlateau without {PLATEAU_MONITOR}, which "
                "it steps on after each epoch's validation: validate every epoch "
                "(trainer.limit_val_batches above 0, trainer.check_val_every_n_epoch=1) or choose "
                "another scheduler"
            )


def build_module(cfg: DictConfig) -> DigitClassifier:
    """The LightningModule: the plain one, or the fused-steps one when
    ``data.steps_per_call > 1``."""
    trusted = trusted_targets(cfg)
    classes = class_names(cfg.data.get("classes", 10))
    try:
        # One output per class of the data set: the data set declares them, the network obeys.
        net = build(cfg.model, "network", trusted, path="model.", **class_count(cfg.model, classes))
        optimizer = build(cfg.optimizer, "optimizer", trusted, path="optimizer.")
        # The factory runs only inside fit; one trial call on a dummy parameter finds a bad key
        # or value (e.g. an added +optimizer.foo) now, before the MLflow run exists.
        optimizer([torch.nn.Parameter(torch.zeros(1))])
        scheduler, interval = None, "epoch"
        if cfg.get("scheduler"):
            # `interval` is ours (when the module steps it), the other keys the scheduler's.
            settings = plain(cfg.scheduler)
            interval = settings.pop("interval", "epoch")  # epoch or step: checked by the schema
            scheduler = build(settings, "scheduler", trusted, path="scheduler.")
            if steps_on_plateau(scheduler):
                check_plateau(interval, cfg.trainer)
    except (InstantiationException, TypeError, ValueError) as e:
        cause = e.__cause__ or e
        raise DigitlabError(
            f"cannot build the model, optimizer or scheduler: {str(cause).splitlines()[0]} "
            "(fix or remove the model.* / optimizer.* / scheduler.* override)"
        ) from None
    check_output_width(net, classes, cfg.model.get("input_size", 28))
    check_cuda_graphs(cfg)
    if cfg.get("channels_last", False):  # convolutions in NHWC layout (a GPU lever)
        net = net.to(memory_format=torch.channels_last)
    settings = dict(
        # The recipe only (config/spec.py): a checkpoint holds no path, store or trust of the
        # machine that trained it, and reads back through the same schema.
        config=check_run(plain(cfg)).config(),
        scheduler=scheduler,
        scheduler_interval=interval,
        num_classes=len(classes),
    )
    if cfg.data.get("steps_per_call", 1) == 1:
        return DigitClassifier(net, optimizer, **settings)
    return FusedStepsClassifier(
        net,
        optimizer,
        **settings,
        batch_size=cfg.data.batch_size,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm"),
        cuda_graphs=cfg.get("cuda_graphs", False),
    )


def class_count(model: DictConfig, classes: tuple[str, ...]) -> dict[str, int]:
    """``{"num_classes": C}`` for a network whose constructor takes it (digitlab's all do): a
    network of your own with a fixed width is checked by :func:`check_output_width`."""
    takes = argument_names(str(model.get("_target_", "")))
    return {"num_classes": len(classes)} if takes is None or "num_classes" in takes else {}


def check_output_width(net: torch.nn.Module, classes: tuple[str, ...], side: int) -> None:
    """The network's logits must be one per class: one image through it says (milliseconds).
    In eval mode, under a forked random state: batch-norm statistics, dropout draws and the
    seeded run stay exactly as if it had not run."""
    was_training = net.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            width = net.eval()(torch.zeros(1, 1, side, side)).shape[-1]
    except Exception:  # the fit reports a network that cannot run, with its own message
        return
    finally:
        net.train(was_training)
    if width != len(classes):
        raise DigitlabError(
            f"the network gives {width} outputs but the data set has {len(classes)} classes "
            "(data.classes): give its constructor a num_classes argument, or build it that wide"
        )


def build_callbacks(
    cfg: DictConfig,
    checkpoint_dir: Path | None = None,
    resuming: bool = False,
    extra: Sequence[L.Callback] = (),
) -> list[L.Callback]:
    """Every callback of a run, in the order Lightning calls them: the run's own checkpoints
    in ``checkpoint_dir`` (none without a folder), the ``callbacks`` group's, the pictures the
    ``figures`` group asks for, then ``extra`` (the caller's own, e.g. a trial's pruning)."""
    built, trusted = [], trusted_targets(cfg)
    if checkpoint_dir is not None:
        final = final_fit(cfg.data.get("val_size"), cfg.data.get("folds"))
        built += checkpoint_callbacks(
            checkpoint_dir, resuming, monitor=None if final else "val/acc"
        )
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:  # `callbacks.<name>=null` drops one
            continue
        try:
            built.append(build(node, "callback", trusted, path=f"callbacks.{name}."))
        except InstantiationException as e:
            cause = e.__cause__ or e
            raise DigitlabError(
                f"cannot build callbacks.{name}: {str(cause).splitlines()[0]} "
                f"(fix or remove the callbacks.{name} override)"
            ) from None
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it may not show
        built = [c for c in built if not isinstance(c, ProgressBar)]
    return [*built, *figure_callbacks(cfg), *extra]


def checkpoint_callbacks(
    folder: Path, resuming: bool = False, monitor: str | None = "val/acc"
) -> list[L.Callback]:
    """The run's own checkpoints in ``folder``: ``best.ckpt`` (highest ``monitor``; a final
    fit's, ``monitor=None``, is its last epoch; first, so it is the Trainer's
    ``checkpoint_callback``, which the test pass uses), ``last.ckpt`` (every epoch, where an
    interrupted run resumes: Lightning >= 2.6 refreshes ``save_last`` only on improvement), and
    the MLflow run id's stamp in both. A resumed run (``resuming``) writes on into its folder,
    where Lightning's warning that it is not empty is noise."""
    if resuming:
        where = re.escape(os.path.realpath(folder))  # Lightning names the folder by its real path
        warnings.filterwarnings("ignore", message=f"Checkpoint directory {where} exists and is not")
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode="max")
    return [best, ModelCheckpoint(dirpath=folder, filename="last"), StampRunId()]


def build_trainer(
    cfg: DictConfig, callbacks: list, output_dir: Path, logger: Any = False
) -> L.Trainer:
    """The Trainer of ``cfg.trainer``'s settings, logging to ``logger`` (False: nowhere)."""
    settings = {str(key): value for key, value in cfg.trainer.items()}
    if cfg.data.get("steps_per_call", 1) > 1:  # the fused module clips gradients itself
        settings = {k: v for k, v in settings.items() if not k.startswith("gradient_clip")}
    try:
        return L.Trainer(
            **settings,
            logger=logger,
            callbacks=callbacks,
            default_root_dir=output_dir,
            plugins=[AtomicCheckpointIO()],
        )
    except (TypeError, ValueError) as e:  # Lightning's MisconfigurationException is a ValueError
        raise DigitlabError(
            f"Lightning rejects the trainer settings: {str(e).splitlines()[0]} "
            "(fix the trainer.* override; conf/trainer/default.yaml lists the keys)"
        ) from None
