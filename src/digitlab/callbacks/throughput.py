"""Callbacks: side effects of training that are not the loss (speed and start-up measurement)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning as L
import torch

from digitlab.clock import since
from digitlab.config.targets import buildable

log = logging.getLogger(__name__)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@buildable("callback")
class EpochThroughput(L.Callback):
    """Logs ``train/samples_per_sec``: training samples over the wall time of the epoch's batches.

    Lightning's ThroughputMonitor synchronises the GPU after every batch, which slows the very
    thing it measures; this callback synchronises twice per epoch and excludes validation.
    """

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, log_seconds: bool = False
    ) -> None:
        self.clock = clock  # a benchmark may count CPU time instead (time.thread_time)
        # Also log train/seconds: the training batches' time so far, validation excluded
        # (experiments/gpu_check.py asks for it: +callbacks.throughput.log_seconds=true).
        self.log_seconds = log_seconds
        self._total = 0.0
        self._start = 0.0
        self._samples = 0
        # The epoch's training time, taken at its last batch (None until then).
        self._elapsed: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        self._start = self.clock()
        self._samples = 0
        self._elapsed = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            _synchronize(pl_module.device)
            self._elapsed = self.clock() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = self._elapsed or self.clock() - self._start
        if self._samples:
            pl_module.log("train/samples_per_sec", self._samples * trainer.world_size / elapsed)
        if self.log_seconds:
            self._total += elapsed
            pl_module.log("train/seconds", self._total)


@buildable("callback")
class TimeToFirstStep(L.Callback):
    """Logs ``time_to_first_step_s``: from the command's start (imports, data, MLflow set-up
    included; ``digitlab.STARTED``) to the first training batch, the wait before anything trains.
    A sweep's job counts from its own start, ``digitlab.fit`` from its call (``digitlab.clock``).
    """

    def __init__(self) -> None:
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.seconds is not None:
            return
        started, label = since()
        self.seconds = time.time() - started
        log.info("first training step %.1f s after %s", self.seconds, label)
        for logger in trainer.loggers:
            logger.log_metrics({"time_to_first_step_s": self.seconds}, step=0)
