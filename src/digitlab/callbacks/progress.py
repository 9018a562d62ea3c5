"""What the terminal shows while training: a progress bar in images and one line per epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from rich.progress import ProgressColumn, Task
from rich.text import Text

from digitlab.config.targets import buildable


@buildable("callback")
class SampleProgressBar(RichProgressBar):
    """Lightning's (rich) bar, counting training images instead of Lightning steps (one step
    holds ``data.steps_per_call`` optimizer steps), their speed in ``img/s``, naming the epoch as
    :class:`EpochReport` does (``epoch 3/3``, where Lightning says ``Epoch 2/2``), without
    ``v_num`` (the logger's version, meaningless for an MLflow run). Only the bar's public
    customization is used: its columns, metrics, total, the counts passed to its hooks, and the
    label set on its rich task."""

    # Whether the training bar counts images (its loader says how many), else Lightning steps.
    counts_images = False
    labelled: tuple[Any, int] | None = None  # (training bar, epoch) last given our label

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        speed = SpeedColumn(self, style=self.theme.processing_speed)
        return [speed if isinstance(c, ProcessingSpeedColumn) else c for c in columns]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images_seen = 0
        super().on_train_epoch_start(trainer, pl_module)
        self.label_epoch(trainer)

    @property
    def total_train_batches(self) -> int | float:
        steps = super().total_train_batches  # Lightning steps, after limit_train_batches
        images = _train_images(self.trainer, steps)
        self.counts_images = images is not None
        return images if images is not None else steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images_seen += len(batch[1])
        # the bar shows batch_idx + 1 done: pass the images seen instead
        super().on_train_batch_end(trainer, pl_module, outputs, batch, self.images_seen - 1)
        if self.labelled != (self.train_progress_bar_id, trainer.current_epoch):
            self.label_epoch(trainer)  # a bar Lightning made here (a mid-epoch resume)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def label_epoch(self, trainer: L.Trainer) -> None:
        """Name the training bar's epoch as the epoch line does, on the bar's rich task."""
        if self.progress is None or self.train_progress_bar_id is None:
            return  # disabled, or no bar yet
        label = epoch_label(trainer.current_epoch, trainer.max_epochs)
        # padded as Lightning pads its label: the bar does not shift when validation's shows
        label = f"{label:{len(self.validation_description)}}"
        self.progress.update(self.train_progress_bar_id, description=label)
        self.labelled = (self.train_progress_bar_id, trainer.current_epoch)
        self.refresh()


class SpeedColumn(ProgressColumn):
    """A bar's speed, named by what the bar counts: the training bar's images (``img/s``, as the
    epoch line says it) or Lightning steps (``steps/s``), the validation and test bars'
    batches (``batches/s``)."""

    def __init__(self, bar: SampleProgressBar, style: Any) -> None:
        self.bar, self.style = bar, style
        super().__init__()

    def render(self, task: Task) -> Text:
        # A bar done shows its pass's average (the epoch line's measure for the training bar);
        # rich's own estimate, over the last updates, is gone once the bar stops moving.
        if task.finished_time:
            speed = task.completed / task.finished_time
        else:
            speed = task.speed or 0.0
        if task.id != self.bar.train_progress_bar_id:
            return Text(f"{speed:.2f} batches/s", style=self.style)
        if self.bar.counts_images:
            return Text(f"{speed:,.0f} img/s", style=self.style)
        return Text(f"{speed:.2f} steps/s", style=self.style)


def epoch_label(epoch: int, max_epochs: int | None) -> str:
    """``epoch 3/3`` for the 0-based ``epoch`` 2 of 3; no total when the run has none (-1)."""
    if max_epochs is None or max_epochs < 0:
        return f"epoch {epoch + 1}"
    return f"epoch {epoch + 1}/{max_epochs}"


def _train_images(trainer: L.Trainer, steps: int | float) -> int | None:
    """Training images this process sees in an epoch of ``steps`` Lightning steps, when its
    loader can say: each step is one batch of ``data.batch_size * data.steps_per_call`` images,
    the last one short (``trainer.limit_train_batches`` may stop the epoch before it)."""
    loader = trainer.train_dataloader
    per_step, images = getattr(loader, "batch_size", None), getattr(loader, "num_samples", None)
    if per_step is None or images is None:
        return None
    return images if steps == float("inf") else min(images, int(steps) * per_step)


@buildable("callback")
class EpochReport(L.Callback):
    """One line per epoch, as MXNet's Speedometer and Flux's ProgressMeter print:

        epoch 2/2  train loss 0.1413 acc 0.9579  val loss 0.1278 acc 0.9620  38,038 img/s  1.6 s

    Lightning runs callbacks' ``on_train_epoch_end`` before the module's, which logs the epoch's
    training loss, so the line is printed once the epoch is over: when the next one starts, or
    when training ends.
    """

    def __init__(self) -> None:
        self._pending: tuple[int, float] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch, time.perf_counter() - self._start

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            return
        (epoch, seconds), self._pending = self._pending, None
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [epoch_label(epoch, trainer.max_epochs)]
        for stage in ("train", "val"):
            if f"{stage}/loss" in m:
                parts.append(
                    f"{stage} loss {m[f'{stage}/loss']:.4f} acc {m.get(f'{stage}/acc', 0):.4f}"
                )
        if "train/samples_per_sec" in m:
            parts.append(f"{m['train/samples_per_sec']:,.0f} img/s")
        parts.append(f"{seconds:.1f} s")
        print("  ".join(parts), flush=True)  # rich's live display prints it above the bar
