"""The LightningModule that trains any digit network: loss, metrics and the optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("train", "val", "test")


class DigitClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with per-epoch ``<stage>/loss`` and ``<stage>/acc``.

    One training batch may carry several optimizer steps: the module cuts it into slices of
    ``batch_size`` samples and steps the optimizer after each (Lightning's manual optimization).
    Lightning's fixed cost per training step (loops, hooks, progress bar, ~0.1-1 ms on a CPU) is
    as long as a whole MLP step on 100 images; the data module serves ``data.steps_per_call``
    steps at once, so that cost is paid once for all of them (experiments/RESULTS.md).
    The slices, their order and the updates are those of one step per batch.

    Args:
        net: any module mapping (N, 1, S, S) float images to (N, 10) logits.
        optimizer: factory taking the parameters (a Hydra ``_partial_`` optimizer).
        config: the resolved run config as plain values; kept in the checkpoint's hyperparameters
            as the recipe to rebuild ``net`` (objects are never pickled into a checkpoint, so every
            checkpoint loads with ``torch.load(..., weights_only=True)``).
        scheduler: factory taking the optimizer (a Hydra ``_partial_`` LR scheduler), or None for
            a constant learning rate.
        scheduler_interval: ``"epoch"`` steps the scheduler after every epoch; ``"step"`` after
            every optimizer step, and its factory is also given ``total_steps``, the optimizer
            steps of the whole run (what OneCycleLR needs).
        batch_size: samples per optimizer step; None: one step per training batch.
        gradient_clip_val, gradient_clip_algorithm: clip gradients before each optimizer step
            (``trainer.gradient_clip_*`` in the config; Lightning leaves clipping to the module
            under manual optimization).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        config: dict[str, Any] | None = None,
        num_classes: int = 10,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        batch_size: int | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        super().__init__()
        # logger=False: train() logs the flat config as params itself (once; resumes may change it).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.batch_size = batch_size
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.automatic_optimization = False
        # validate_args=False: inputs are checked once by the data readers, not on every step.
        # Keyed "<stage>_acc": a ModuleDict key may not shadow nn.Module.train.
        self.accuracy = nn.ModuleDict(
            {
                f"{s}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                for s in STAGES
            }
        )
        # Losses arrive per sample (exact means over uneven batches without weights);
        # nan_strategy="disable" skips a NaN check that reads the value on the host (a GPU sync
        # per update): a NaN loss stays visible in the logged mean.
        self.mean_loss = nn.ModuleDict(
            {f"{s}_loss": MeanMetric(nan_strategy="disable") for s in STAGES}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self.net(x)
        self.accuracy[f"{stage}_acc"].update(logits, y)
        self.mean_loss[f"{stage}_loss"].update(F.cross_entropy(logits, y, reduction="none"))

    def _log_epoch(self, stage: str) -> None:
        self.log(f"{stage}/loss", self.mean_loss[f"{stage}_loss"].compute())
        self.log(f"{stage}/acc", self.accuracy[f"{stage}_acc"].compute())
        self.mean_loss[f"{stage}_loss"].reset()
        self.accuracy[f"{stage}_acc"].reset()

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """One optimizer step per ``batch_size`` slice of ``batch``; returns the batch's mean
        loss and the loss of every step."""
        x, y = batch
        size = self.batch_size or len(y)
        optimizer = self.optimizers()
        direct = self._direct
        schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"]
        losses, logits, step_losses = [], [], []
        for xb, yb in zip(x.split(size), y.split(size), strict=True):
            out = self.net(xb)
            loss = F.cross_entropy(out, yb, reduction="none")  # per sample, for the metric below
            optimizer.zero_grad(set_to_none=True)
            step_loss = loss.mean()
            if direct:
                step_loss.backward()
            else:
                self.manual_backward(step_loss)
            step_losses.append(step_loss.detach())
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
            if direct:  # the torch optimizer itself, with Lightning's step counting around it
                optimizer._on_before_step()
                optimizer.optimizer.step()
                optimizer._on_after_step()
            else:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            losses.append(loss.detach())
            logits.append(out.detach())
        # Metrics are updated once per batch, not per slice: the same values for less overhead
        # (each torchmetrics update costs dozens of Python attribute writes).
        losses = torch.cat(losses)
        self.accuracy["train_acc"].update(torch.cat(logits), y)
        self.mean_loss["train_loss"].update(losses)
        # Each optimizer step's loss, in order: a non-finite one is named by its own step.
        return {"loss": losses.mean(), "step_losses": torch.stack(step_losses)}

    def _direct_steps(self) -> bool:
        """Whether backward and the optimizer step may skip Lightning's wrappers.

        ``manual_backward`` and ``LightningOptimizer.step`` dispatch three hooks to every callback
        per optimizer step (before/after backward, before the optimizer step), about a
        quarter of an MLP step on a CPU (experiments/RESULTS.md). No callback of this project
        uses those hooks, and with full precision or bf16 (no gradient scaler) on one process
        the wrappers do nothing else, so the module calls ``backward`` and the torch optimizer
        itself there, keeping Lightning's step counter. Everything else (16-bit with a scaler,
        DDP, a callback that implements one of those hooks) goes through Lightning.
        """
        trainer = self.trainer
        plugin = trainer.precision_plugin
        if trainer.world_size != 1 or getattr(plugin, "scaler", None) is not None:
            return False
        if type(plugin).__name__ not in ("Precision", "MixedPrecision", "HalfPrecision"):
            return False
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        return not any(
            getattr(type(c), h) is not getattr(L.Callback, h) for c in trainer.callbacks for h in hooks
        )

    def _step_epoch_schedulers(self) -> None:
        """Under manual optimization the module steps LR schedulers itself."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "epoch":
                config.scheduler.step()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.net(x).softmax(dim=1)

    def on_train_start(self) -> None:
        self._direct = self._direct_steps()  # callbacks and precision are fixed for the fit

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        self._step_epoch_schedulers()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        if self.scheduler_interval == "step":
            scheduler = self.scheduler_factory(optimizer, total_steps=self.total_optimizer_steps())
        else:
            scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit. Lightning's estimate counts its own training steps
        (limits applied), each holding up to ``steps_per_call`` optimizer steps."""
        trainer, datamodule = self.trainer, self.trainer.datamodule
        per_call = datamodule.steps_per_call if trainer.world_size == 1 else 1
        bound = trainer.estimated_stepping_batches * per_call
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            samples = datamodule.train_dataloader().num_samples
            bound = min(bound, math.ceil(samples / self.batch_size) * trainer.max_epochs)
        return int(bound)
