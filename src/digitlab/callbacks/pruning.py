"""Report ``val/acc`` to the job's Optuna trial after every epoch; stop when the pruner says so."""

from __future__ import annotations

import optuna
from optuna_integration import PyTorchLightningPruningCallback


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's own Lightning pruning callback, stopping the fit instead of raising in it.

    The parent class raises ``optuna.TrialPruned`` inside ``on_validation_end``; Lightning then
    treats the fit as crashed (the logger ends the run FAILED, no checkpoint of the last epoch).
    Here the trial is still reported and asked the same way, but a pruned fit ends like an early
    stop: the epoch's checkpoints are written, :attr:`stop_reason` says why, and ``train`` marks
    the run pruned and skips the test pass.

    Args:
        trial: the running trial (``digitlab.search.study.current_trial``).
        monitor: the logged metric the pruner compares, ``val/acc`` (higher is better).
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str = "val/acc") -> None:
        super().__init__(trial, monitor)
        self.stop_reason: str | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self._stop(trainer, pl_module.current_epoch)

    def on_fit_end(self, trainer, pl_module) -> None:
        # Under DDP the parent class records a prune in the storage and stops every rank itself.
        if self.is_ddp_backend and self.stop_reason is None:
            try:
                self.check_pruned()
            except optuna.TrialPruned:
                self._stop(trainer, trainer.current_epoch)

    def _stop(self, trainer, epoch: int) -> None:
        trainer.should_stop = True
        self.stop_reason = (
            f"pruned by Optuna after epoch {epoch} (trial {self._trial.number}, "
            f"{self.monitor} {trainer.callback_metrics[self.monitor].item():.4f})"
        )
