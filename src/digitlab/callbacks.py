"""Callbacks: side effects of training that are not the loss (speed measurement)."""

from __future__ import annotations

import time

import lightning as L
import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochThroughput(L.Callback):
    """Logs ``train/samples_per_sec``: training samples over the wall time of the epoch's batches.

    Lightning's ThroughputMonitor synchronises the GPU after every batch, which slows the very
    thing it measures; this callback synchronises twice per epoch and excludes validation.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        self._start = time.perf_counter()
        self._samples = 0
        self._elapsed = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            _synchronize(pl_module.device)
            self._elapsed = time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = self._elapsed or time.perf_counter() - self._start
        if self._samples:
            pl_module.log("train/samples_per_sec", self._samples * trainer.world_size / elapsed)
