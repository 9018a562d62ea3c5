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
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf

from digitlab.callbacks import EpochThroughput, TimeToFirstStep
from digitlab.callbacks.guards import (
    NonFiniteLoss,
    StampRunId,
    StopOnNonFiniteLoss,
    signals_as_interrupts,
)
from digitlab.config import project_root
from digitlab.config.checks import check_config
from digitlab.data.datamodule import DigitDataModule
from digitlab.data.sources import DigitData
from digitlab.errors import DigitlabError, Interrupted
from digitlab.figures import figure_callbacks
from digitlab.tracking import store as tracking
from digitlab.training.checkpoints import (
    CHECKPOINT_DIR_TAG,
    Resume,
    find_resume,
    load_checkpoint,
    load_net_weights,
)
from digitlab.training.classifier import DigitClassifier


def quiet_lightning() -> None:
    """Lightning's start-up lines once (Hydra already prints them), without its advertising tip."""
    # Under DDP our epoch metrics are already global: torchmetrics' compute() gathers every
    # rank's state, so Lightning's advice to add sync_dist=True (average again) does not apply.
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self.log\('(train|val|test)/",
        category=PossibleUserWarning,
    )
    # The module logs per epoch only, so the step-logging interval has nothing to log.
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
    )
    # best.ckpt's callback comes first on purpose: "best" means the best validation accuracy.
    warnings.filterwarnings(
        "ignore", message=r'`\.test\(ckpt_path="best"\)` is called with Trainer configured with multiple'
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


def build_datamodule(cfg: DictConfig, loaded: DigitData | None = None) -> DigitDataModule:
    data = cfg.data
    return DigitDataModule(
        load=(lambda: loaded) if loaded is not None else instantiate(data.source, _partial_=True),
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
        steps_per_call=data.get("steps_per_call", 1),
    )


def build_module(cfg: DictConfig) -> DigitClassifier:
    # data.resize is authoritative: the model is built for the images the data module serves.
    try:
        net = instantiate(cfg.model, input_size=cfg.data.resize)
        optimizer = instantiate(cfg.optimizer)
        # The factory runs only inside fit; one trial call on a dummy parameter finds a bad key
        # or value (e.g. an added +optimizer.foo) now, before the MLflow run exists.
        optimizer([torch.nn.Parameter(torch.zeros(1))])
        scheduler, interval = None, "epoch"
        if cfg.get("scheduler"):
            # `interval` is ours (when the module steps it), the other keys the scheduler's.
            settings = OmegaConf.to_container(cfg.scheduler, resolve=True)
            interval = settings.pop("interval", "epoch")
            if interval not in ("epoch", "step"):
                raise DigitlabError(
                    f"scheduler.interval={interval!r} is invalid: it must be epoch or step"
                )
            scheduler = instantiate(settings)
    except (InstantiationException, TypeError, ValueError) as e:
        cause = e.__cause__ or e
        raise DigitlabError(
            f"cannot build the model, optimizer or scheduler: {str(cause).splitlines()[0]} "
            "(fix or remove the model.* / optimizer.* / scheduler.* override)"
        ) from None
    return DigitClassifier(
        net,
        optimizer,
        config=OmegaConf.to_container(cfg, resolve=True),
        scheduler=scheduler,
        scheduler_interval=interval,
        batch_size=cfg.data.batch_size,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm"),
    )


def build_trainer(cfg: DictConfig, callbacks: list, output_dir: Path) -> L.Trainer:
    """The Trainer, without its logger yet (set once the MLflow run exists)."""
    # The module clips gradients itself (manual optimization): the Trainer must not be given them.
    settings = {k: v for k, v in cfg.trainer.items() if not k.startswith("gradient_clip")}
    try:
        return L.Trainer(**settings, logger=False, callbacks=callbacks, default_root_dir=output_dir)
    except (TypeError, ValueError) as e:  # Lightning's MisconfigurationException is a ValueError
        raise DigitlabError(
            f"Lightning rejects the trainer settings: {str(e).splitlines()[0]} "
            "(fix the trainer.* override; conf/trainer/default.yaml lists the keys)"
        ) from None


def _resume_message(run_id: str, logged: list[str]) -> str:
    if not logged:
        return f"run {run_id} has no checkpoint yet (no epoch finished): start it again"
    return f"last checkpoint {logged[0]} logged to run {run_id}; continue with: resume={run_id}"


def train(
    cfg: DictConfig,
    output_dir: str | Path | None = None,
    choices: Mapping[str, Any] | None = None,
    data: DigitData | None = None,
) -> dict[str, Any]:
    """Fit and test one configuration, recorded as one MLflow run.

    Every input a user can get wrong (data files, trainer settings, store, checkpoint to resume)
    is checked before the run is created, so a bad input leaves no run behind. Once training
    runs, SIGINT/SIGTERM mark the run KILLED and a non-finite loss FAILED, both logging the last
    checkpoint; any other exception marks it FAILED. ``resume`` (a run id or .ckpt path)
    continues a run (docs/errors.md).

    Args:
        cfg: the composed config (``conf/config.yaml`` and its groups).
        output_dir: where checkpoints go (Hydra's job folder); a temporary folder if None.
        choices: the chosen option per config group (Hydra's ``runtime.choices``), for the run
            name and tags.
        data: the already decoded data set (the command line loads it before importing torch);
            None: loaded here from ``cfg.data.source``.

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

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg, data)
    datamodule.split()  # decode and validate the files now, before any run exists
    module = build_module(cfg)
    log_cfg = cfg.logger
    client = tracking.open_client(log_cfg.tracking_uri)
    experiment_id = tracking.get_or_create_experiment(
        client, log_cfg.experiment_name, tracking.artifact_root(log_cfg)
    )
    resume: Resume | None = None
    if target := cfg.get("resume"):
        resume = find_resume(target, client, output_dir / "resume")
        load_net_weights(module.net, load_checkpoint(resume.path)["state_dict"], resume.path)
    checkpoint_dir = (resume and resume.dirpath) or output_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val/acc", mode="max")
    # last.ckpt, rewritten after every epoch: where an interrupted run resumes. (Lightning >= 2.6
    # refreshes `save_last` only in epochs where the monitored score improves.)
    latest = ModelCheckpoint(dirpath=checkpoint_dir, filename="last")
    stamp = StampRunId()
    trainer = build_trainer(
        cfg,
        [checkpoint, latest, EpochThroughput(), TimeToFirstStep(), StopOnNonFiniteLoss(), stamp,
         *figure_callbacks(cfg)],
        output_dir,
    )
    # Under DDP every process runs this function; the Trainer has read this process's global
    # rank from the launcher (Lightning's re-run of the command, SLURM, torchrun), and rank 0
    # alone creates and records the MLflow run.
    check_launcher(trainer)
    owner = trainer.is_global_zero

    name = log_cfg.run_name or tracking.run_name(choices, cfg.seed)
    if not owner:
        run_id = None
    elif resume and resume.run_id:  # continue the interrupted run: one run, one history
        run_id = resume.run_id
        name = client.get_run(run_id).info.run_name
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {f"choice.{group}": str(option) for group, option in choices.items()}
        if commit := tracking.git_commit(project_root()):
            tags["mlflow.source.git.commit"] = commit
        if resume:
            tags["digitlab.resumed_from"] = str(resume.path)
        tags.update(tracking.sweep_tags())
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    if owner:
        client.set_tag(run_id, CHECKPOINT_DIR_TAG, str(checkpoint.dirpath))
    stamp.run_id = run_id
    status = "FAILED"
    with signals_as_interrupts() as caught:
        try:
            if owner:
                tracking.log_params(client, run_id, tracking.flatten(resolved))
                client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            trainer.logger = MLFlowLogger(tracking_uri=log_cfg.tracking_uri, run_id=run_id)
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=resume and str(resume.path),
                weights_only=True,
            )
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            if cfg.test_after_fit:
                (tested,) = trainer.test(
                    module, datamodule=datamodule, ckpt_path="best", verbose=False,
                    weights_only=True,
                )
                metrics.update({k: float(v) for k, v in tested.items()})
            if owner and log_cfg.log_checkpoint and checkpoint.best_model_path:
                client.log_artifact(run_id, checkpoint.best_model_path, "checkpoints")
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            status = "KILLED"
            if not owner:
                raise
            logged = tracking.log_checkpoints(client, run_id, latest.best_model_path)
            name_of = caught.signal.name if caught.signal else "an exit request"
            raise Interrupted(
                f"{name_of} stopped training; run {run_id} is KILLED; {_resume_message(run_id, logged)}",
                signum=caught.signal or 2,
            ) from None
        except NonFiniteLoss as e:
            if not owner:
                raise
            logged = tracking.log_checkpoints(client, run_id, latest.best_model_path)
            kept = f"last good checkpoint {logged[0]}" if logged else "no checkpoint was saved yet"
            raise NonFiniteLoss(f"{e}; run {run_id} is FAILED, {kept}") from None
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
