"""The LightningModule that trains any digit network: loss, metrics and the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("train", "val", "test")
# What ReduceLROnPlateau measures a plateau on: the validation loss, logged after each validation.
PLATEAU_MONITOR = "val/loss"


def steps_on_plateau(scheduler_factory: Any) -> bool:
    """Whether a scheduler factory (the built ``scheduler`` config, a partial) makes a
    ReduceLROnPlateau, which steps on a measured value rather than a count."""
    made = getattr(scheduler_factory, "func", scheduler_factory)
    return isinstance(made, type) and issubclass(made, ReduceLROnPlateau)


class DigitClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with per-epoch ``<stage>/loss`` and ``<stage>/acc``,
    one optimizer step per batch by Lightning's automatic optimization (so clipping,
    accumulation and schedulers are the Trainer's; ``FusedStepsClassifier`` takes several).

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_``); a ``step`` interval
    scheduler's also gets ``total_steps`` (what OneCycleLR needs). ``config``, the resolved run
    config as plain values, is kept in the checkpoint's hyperparameters as the recipe to rebuild
    ``net``: objects are never pickled into a checkpoint, so every one loads weights-only.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        config: dict[str, Any] | None = None,
        num_classes: int = 10,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        # logger=False: the run logs the flat config as params itself (once; resumes may change it).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
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

    def stage_metrics(self, stage: str) -> tuple[MulticlassAccuracy, MeanMetric]:
        """The stage's accuracy and mean loss (``train``, ``val`` or ``test``)."""
        accuracy, loss = self.accuracy[f"{stage}_acc"], self.mean_loss[f"{stage}_loss"]
        assert isinstance(accuracy, MulticlassAccuracy) and isinstance(loss, MeanMetric)
        return accuracy, loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Update the stage's metrics with one batch; returns the per-sample losses."""
        x, y = batch
        logits = self.net(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        accuracy, mean_loss = self.stage_metrics(stage)
        accuracy.update(logits.detach(), y)
        mean_loss.update(losses.detach())
        return losses

    def _log_epoch(self, stage: str) -> None:
        accuracy, mean_loss = self.stage_metrics(stage)
        self.log(f"{stage}/loss", mean_loss.compute())
        self.log(f"{stage}/acc", accuracy.compute())
        mean_loss.reset()
        accuracy.reset()

    def training_step(self, batch, batch_idx: int) -> STEP_OUTPUT:
        return self._evaluate(batch, "train").mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

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
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if isinstance(scheduler, ReduceLROnPlateau) and self.automatic_optimization:
            config["monitor"] = PLATEAU_MONITOR  # Lightning steps it with this metric's value
        return {"optimizer": optimizer, "lr_scheduler": config}

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit (limits and gradient accumulation applied)."""
        return int(self.trainer.estimated_stepping_batches)
