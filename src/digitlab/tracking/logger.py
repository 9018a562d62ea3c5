"""Lightning's MLflow logger, writing into a run that digitlab.tracking.run owns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

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

    def finalize(self, status: str = "success") -> None:
        return None  # (MLFlowLogger logs checkpoints here only with log_model, never set here)
