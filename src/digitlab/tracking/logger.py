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

from digitlab.tracking.run import STOP, TrackedRun


class RunLogger(Logger):
    """Lightning's logger for metrics only, into ``run``: it never creates or ends a run.

    It is built with the Trainer, before ``run`` is opened (a bad Trainer setting must leave no
    run behind), and writes through the run's own client once the run is open. Written on
    Lightning's public ``Logger`` rather than as an ``MLFlowLogger``, which would create, end
    and name runs itself: the run's status is :class:`digitlab.tracking.run.TrackedRun`'s to set
    (KILLED after a signal, FINISHED only once tested).

    What it logs reads as the training does (:meth:`log_metrics`): a metric's step is the epoch,
    counted from 1 as the terminal's ``epoch 1/3`` does; the test metrics are left to
    :func:`digitlab.training.run.train`, which logs them once; values are short decimals.
    """

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
        """The MLflow run's id, once it is open (None before, and off global rank zero)."""
        return self.run.run_id

    @property
    def experiment(self):
        """The run's ``MlflowClient`` (pictures log figures and tables through it)."""
        return self.run.client

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None  # the run logs its config as params itself, once

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at the epoch they belong to, as :func:`decimal` values.

        Lightning passes its optimizer-step counter as ``step`` and adds the epoch (from 0) as a
        metric ``epoch``: here the step is that epoch plus one, and ``epoch`` itself is not
        logged (the step says it). A call without ``epoch`` (a callback's one-off value) keeps
        its own step. ``test/*`` metrics are not logged here: the test pass runs after the fit,
        and ``train`` logs its metrics once, linked to the logged model when there is one.
        """
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
    (:data:`digitlab.tracking.run.STOP` records them): between batches no store call is under
    way, and no epoch's end (its metrics, then its checkpoints) is left half done. It raises
    ``KeyboardInterrupt``, which Lightning answers with its graceful shutdown; the run then ends
    KILLED. Last among the run's callbacks, so a signal sent by one of them in a hook (as tests
    do) stops at that very hook."""

    def _stop_if_asked(self, *args, **kwargs) -> None:
        STOP.raise_if_received()

    on_train_batch_start = on_train_batch_end = _stop_if_asked
    on_validation_batch_start = on_validation_batch_end = _stop_if_asked
    on_test_batch_start = on_test_batch_end = _stop_if_asked
