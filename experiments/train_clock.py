"""One stopwatch for any Lightning training command: a callback printing ``TRAIN_CLOCK {...}``.

Both commands of ``template_side_by_side.py`` load it through their own Hydra callback config
(``+callbacks.train_clock._target_=train_clock.TrainClock``, with ``experiments/`` on
``PYTHONPATH``), so digitlab and lightning-hydra-template are timed by the same code, and neither
project's source is changed. It needs only Lightning, which both environments have.

Lines it prints (one JSON object each, read back by ``template_side_by_side.read_clock``):
  {"params": N}                             trainable parameters, when fit starts
  {"first_step_unix": t}                    ``time.time()`` at the first training batch
  {"epoch": e, "samples": n, "seconds": s}  per epoch: training samples and the wall time from
                                            the epoch's start to its last training batch's end
                                            (validation excluded), as digitlab's EpochThroughput
  {"test_acc": a}                           ``test/acc`` after the test pass
"""

from __future__ import annotations

import json
import time

import lightning as L

PREFIX = "TRAIN_CLOCK "


def emit(**values) -> None:
    print(PREFIX + json.dumps(values), flush=True)


class TrainClock(L.Callback):
    """Times every epoch's training batches with ``time.perf_counter`` (no GPU sync: CPU only)."""

    def __init__(self) -> None:
        self._first_step_seen = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        emit(params=sum(p.numel() for p in pl_module.parameters() if p.requires_grad))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._samples = 0
        self._elapsed = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._first_step_seen:
            self._first_step_seen = True
            emit(first_step_unix=time.time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += len(batch[1])  # (images, labels) in both projects
        if batch_idx + 1 == trainer.num_training_batches:
            self._elapsed = time.perf_counter() - self._start  # before validation starts

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        elapsed = self._elapsed or time.perf_counter() - self._start
        emit(epoch=trainer.current_epoch, samples=self._samples, seconds=elapsed)

    def on_test_end(self, trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("test/acc")
        emit(test_acc=None if acc is None else float(acc))
