"""Lightning's side of a run that digitlab.tracking.run owns: the MLflow logger writing into it,
and the callback that stops at a batch once a signal asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from digitlab.tracking.run import STOP

if TYPE_CHECKING:
    from digitlab.tracking.run import TrackedRun


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` for metrics only, into ``run``: it never creates or ends a run.

    It is built with the Trainer, before ``run`` is opened (a bad Trainer setting must leave no
    run behind), and takes the run's id when it first logs, by then inside the run.

    Lightning calls ``finalize("success")`` when a fit ends, before the test pass, and
    ``finalize("failed")`` on Ctrl-C or an error; ``MLFlowLogger`` then marks the run FINISHED or
    FAILED. The run's status is :class:`digitlab.tracking.run.TrackedRun`'s to set (KILLED after a
    signal, FINISHED only once tested): a process killed between the two would otherwise leave
    a run FINISHED without its test metrics, or FAILED after Ctrl-C, which nothing corrects.

    What it logs reads as the training does (:meth:`log_metrics`): a metric's step is the epoch,
    counted from 1 as the terminal's ``epoch 1/3`` does; the test metrics are left to
    :func:`digitlab.training.run.train`, which logs them once; values are short decimals.
    """

    def __init__(self, run: TrackedRun, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.run = run

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._run_id is None:
            if self.run.run_id is None:
                raise RuntimeError("RunLogger logs only inside its opened run")
            self._run_id = self.run.run_id
        return MLFlowLogger.experiment.fget(self)

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
        if kept:
            super().log_metrics(kept, step)

    def finalize(self, status: str = "success") -> None:
        return None  # (MLFlowLogger logs checkpoints here only with log_model, never set here)


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
