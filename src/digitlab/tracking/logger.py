"""Lightning's side of a run that digitlab.tracking.run owns: the MLflow logger writing into it,
and the callback that stops at a batch once a signal asked."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Metric

from digitlab.tracking.run import TrackedRun
from digitlab.tracking.signals import STOP


class RunLogger(Logger):
    """Lightning's logger for metrics only, into ``run``, which it never creates or ends (an
    ``MLFlowLogger`` would, where the status is :class:`TrackedRun`'s to set). Built with the
    Trainer before ``run`` opens, so a bad Trainer setting leaves no run behind."""

    def __init__(self, run: TrackedRun) -> None:
        super().__init__()
        self.run = run

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str | None:
        return self.run.run_id

    @property
    def run_id(self) -> str | None:
        return self.run.run_id

    @property
    def experiment(self):
        return self.run.client

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None  # the run logs its config as params itself, once

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` as :func:`decimal` values at their epoch counted from 1 (as the
        terminal's ``epoch 1/3``), in place of Lightning's optimizer step and ``epoch`` metric.
        ``test/*`` is left to ``train``, which logs it once, with the model."""
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        if epoch is not None:
            step = int(epoch) + 1
        kept = {k: decimal(v) for k, v in metrics.items() if not k.startswith("test/")}
        if not kept:
            return
        if self.run.run_id is None:
            raise RuntimeError("RunLogger logs only inside its opened run")
        now = int(time.time() * 1000)
        self.run.client.log_batch(
            self.run.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in kept.items()]
        )


def decimal(value: float) -> float:
    """``value`` as the shortest decimal that is the same float32, when it is a float32 (what
    torch computes metrics in): 0.98799997 (float32's 0.988 printed as a double) logs as 0.988.
    Any other value (a time measured in Python, in double precision) is left as it is."""
    single = np.float32(value)
    if float(single) != value:  # not a float32 (or NaN): nothing to shorten
        return value
    return float(str(single))


class StopOnSignal(Callback):
    """Stops the fit or the test pass at a batch's start or end once Ctrl-C or SIGTERM came
    (:data:`digitlab.tracking.signals.STOP`), where no store call or epoch's end is under way.
    Last among the run's callbacks: a signal sent by one of them in a hook stops at that hook."""

    def _stop_if_asked(self, *args, **kwargs) -> None:
        STOP.raise_if_received()

    on_train_batch_start = on_train_batch_end = _stop_if_asked
    on_validation_batch_start = on_validation_batch_end = _stop_if_asked
    on_test_batch_start = on_test_batch_end = _stop_if_asked
