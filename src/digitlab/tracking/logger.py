"""Lightning's MLflow logger, writing into a run that digitlab.tracking.run owns."""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` for metrics only: it never ends the run.

    Lightning calls ``finalize("success")`` when a fit ends, before the test pass, and
    ``finalize("failed")`` on Ctrl-C or an error; ``MLFlowLogger`` then marks the run FINISHED or
    FAILED. The run's status is :class:`digitlab.tracking.run.TrackedRun`'s to set (KILLED after a
    signal, FINISHED only once tested): a process killed between the two would otherwise leave
    a run FINISHED without its test metrics, or FAILED after Ctrl-C, which nothing corrects.
    """

    def finalize(self, status: str = "success") -> None:
        return None  # (MLFlowLogger logs checkpoints here only with log_model, never set here)
