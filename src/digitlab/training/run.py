"""``train(cfg)``: one run from its config, the recipe: build, open the MLflow run, fit, test."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow.entities import Metric
from omegaconf import DictConfig, open_dict

from digitlab.config import project_root
from digitlab.config.spec import check_config, final_fit
from digitlab.data.sources import DigitData
from digitlab.logs import set_verbosity, verbose_requested
from digitlab.tracking import store
from digitlab.tracking.lineage import log_splits
from digitlab.tracking.logger import RunLogger, StopOnSignal, decimal
from digitlab.tracking.registry import register
from digitlab.tracking.run import TrackedRun, git_commit, run_name
from digitlab.tracking.sweep import sweep_tags, swept_values
from digitlab.training.build import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    check_accelerator,
    check_launcher,
    plain,
    quiet_lightning,
    set_matmul_precision,
)
from digitlab.training.checkpoints import (
    Resume,
    find_resume,
    job_roots,
    load_net_weights,
    restore_point,
)
from digitlab.training.logged_model import log_model


def train(
    cfg: DictConfig,
    output_dir: str | Path | None = None,
    choices: Mapping[str, Any] | None = None,
    data: DigitData | None = None,
    callbacks: Sequence[L.Callback] = (),
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fit and test one configuration (``conf/config.yaml`` composed), recorded as one MLflow
    run. Every input a user can get wrong is checked before the run is created, so a bad input
    leaves no run behind; the run's life (KILLED, FAILED, checkpoints kept) is
    :class:`TrackedRun`'s.

    ``output_dir``: where checkpoints go (Hydra's job folder; None: a temporary folder);
    ``choices``: Hydra's ``runtime.choices``, for the run name and tags; ``data``: the data set
    the command line decoded before importing torch (None: read here); ``callbacks``: after the
    ``callbacks`` group's; ``tags``: applied last (a k-fold run names its own parent).

    Returns ``{"run_id", "run_name", "metrics", "seconds", "best_checkpoint", "pruned"}``
    (``pruned``: why a callback stopped the fit on purpose); ``run_id`` is None in the DDP
    processes other than rank 0, which record nothing.
    """
    started = time.perf_counter()
    set_verbosity(verbose_requested(cfg))
    quiet_lightning()
    set_matmul_precision(cfg)
    check_config(cfg)
    check_accelerator(cfg.trainer.accelerator, cfg.trainer.devices)
    if final_fit(cfg.data.val_size, cfg.data.get("folds")):
        # A final fit (data.val_size=0) has no validation rows: Lightning skips the pass, the
        # run keeps its last epoch, and the tag says why it has no val/acc.
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.trainer.limit_val_batches = 0
        tags = {**(tags or {}), "digitlab.final_fit": "true"}
    # resume=<run id> looks for the run's job folder beside this one's (when the command names
    # one: a temporary folder's neighbours are not jobs) and in the project's outputs/, multirun/.
    roots = job_roots(output_dir or None)
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="digitlab-"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg, data)
    datamodule.split()  # decode and validate the files now, before any run exists
    module = build_module(cfg)
    client, experiment_id = store.open_experiment(cfg.logger)
    resume = (
        find_resume(cfg.resume, client, output_dir / "resume", roots) if cfg.get("resume") else None
    )
    if resume:
        load_net_weights(module.net, resume.checkpoint["state_dict"], resume.path)
    # The run's own folder, resumed or not: the only place its checkpoints are written or deleted.
    checkpoint_dir = output_dir / "checkpoints"
    restore = restore_point(resume, checkpoint_dir, output_dir / "resume") if resume else None
    run = tracked_run(cfg, choices, client, experiment_id, checkpoint_dir, tags, resume)
    trainer = build_trainer(
        cfg,
        build_callbacks(
            cfg, checkpoint_dir, resuming=bool(resume), extra=[*callbacks, StopOnSignal()]
        ),
        output_dir,
        logger=RunLogger(run),
    )
    check_launcher(trainer)
    # Under DDP every process runs this function; global rank zero alone records the run.
    with run.opened_by(trainer.is_global_zero):
        _record_inputs(cfg, run, datamodule, choices)
        metrics = _fit_and_test(cfg, trainer, module, datamodule, run, restore)
        best_callback = trainer.checkpoint_callback  # best.ckpt: the first checkpoint callback
        assert isinstance(best_callback, ModelCheckpoint)  # build_callbacks puts it first
        best = best_callback.best_model_path
        _record_outputs(cfg, run, best, datamodule, metrics, trainer.current_epoch)
    seconds = time.perf_counter() - started
    return {
        "run_id": run.run_id,
        "run_name": run.name,
        "metrics": metrics,
        "seconds": seconds,
        "best_checkpoint": best,
        "pruned": run.pruned,
    }


def _fit_and_test(
    cfg, trainer: L.Trainer, module, datamodule, run: TrackedRun, restore: Path | None
) -> dict[str, float]:
    """Fit (from ``restore``, a resumed run's state), then test the best checkpoint unless a
    callback stopped the fit on purpose (a pruned Optuna trial says why in ``stop_reason``):
    that run is marked pruned instead."""
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=restore and str(restore), weights_only=True
    )
    metrics = {k: decimal(float(v)) for k, v in trainer.callback_metrics.items()}
    # Lightning sets Trainer.callbacks in its callback connector, undeclared on the class.
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    stopped = next((c.stop_reason for c in callbacks if getattr(c, "stop_reason", None)), None)
    if stopped:
        run.mark_pruned(stopped)
    elif cfg.test_after_fit and len(datamodule.split()["test"][1]):  # a final fit has none
        (tested,) = trainer.test(
            module, datamodule=datamodule, ckpt_path="best", verbose=False, weights_only=True
        )
        metrics.update({k: decimal(float(v)) for k, v in tested.items()})
    return metrics


def _record_inputs(cfg, run: TrackedRun, datamodule, choices) -> None:
    """The data the run learns from: each split's size and source files' digest (MLflow inputs)."""
    if run.run_id is None:
        return
    name = (choices or {}).get("data") or cfg.data.source._target_.rsplit(".", 1)[-1].removeprefix(
        "load_"
    )
    sizes = {part: len(labels) for part, (_, labels) in datamodule.split().items()}
    # What cut the rows: the seed of the split (data.split_seed, else the run's seed), the sizes
    # and, under cross-validation, the fold.
    split = {
        "seed": datamodule.split_seed,
        "val_size": cfg.data.val_size,
        "test_size": cfg.data.test_size,
    }
    if datamodule.folds:
        split.update(folds=datamodule.folds, fold=datamodule.fold)
    log_splits(run.client, run.run_id, name, datamodule.files, sizes, split)


def _record_outputs(
    cfg, run: TrackedRun, checkpoint: str, datamodule, metrics: dict, epochs: int
) -> None:
    """What a finished run keeps beyond its epochs' metrics: the test metrics (once, at the
    step of the last epoch trained, ``epochs``), the best checkpoint, and the best network as an
    MLflow Model (registered under ``logger.register_as`` when that is set)."""
    if run.run_id is None:  # DDP: ranks other than zero record nothing
        return
    if cfg.logger.log_checkpoint:
        run.log_checkpoint(checkpoint)
    tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
    if not (cfg.logger.get("log_model", False) and checkpoint) or run.pruned:
        # No model to log the test metrics with (a pruned trial was never tested): logged once
        # here, as the run's logger leaves them out (RunLogger).
        if tested:
            now = int(time.time() * 1000)
            logged = [Metric(k, v, now, epochs) for k, v in tested.items()]
            run.client.log_batch(run.run_id, metrics=logged)
        return
    split = datamodule.split()
    example = (split["test"] if len(split["test"][1]) else split["train"])[0][:2].numpy()
    classes = len(datamodule.classes)
    # the test metrics are logged with the model, which they describe (one entry in the run)
    log_model(cfg.logger.tracking_uri, run.run_id, checkpoint, example, tested, classes, epochs)
    # A sweep's jobs leave registering to their parent, which registers its best child.
    if cfg.logger.get("register_as") and "mlflow.parentRunId" not in run.tags:
        print(
            f"digitlab: {register(run.client, run.run_id, cfg.logger.register_as).line()}",
            flush=True,
        )


def tracked_run(
    cfg,
    choices,
    client,
    experiment_id,
    folder: Path,
    tags: Mapping[str, str] | None,
    resume: Resume | None = None,
    suffix: str = "",
) -> TrackedRun:
    """The MLflow run a training (or a k-fold parent, ``suffix`` ``-cv<K>``) records into: its
    name, tags (``tags`` last) and what it resumes."""
    choices = {
        k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")
    }
    # A resumed run keeps the choices it was trained with (its config is the stored one).
    own = {} if resume else {f"choice.{group}": str(option) for group, option in choices.items()}
    if commit := git_commit(project_root()):
        own["mlflow.source.git.commit"] = commit
    if resume:
        own["digitlab.resumed_from"] = str(resume.path)
    return TrackedRun(
        client,
        experiment_id,
        plain(cfg),
        folder,
        name=(cfg.logger.run_name or run_name(choices, cfg.seed, swept_values())) + suffix,
        tags={**own, **sweep_tags(), **(tags or {})},
        resume_run_id=resume.run_id if resume else None,
    )
