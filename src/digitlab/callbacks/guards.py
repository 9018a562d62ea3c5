"""What keeps a run's work safe: stop on a non-finite loss, checkpoints stamped with their run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from digitlab.config.targets import buildable
from digitlab.errors import NonFiniteLoss
from digitlab.tracking.tags import RUN_ID_KEY


@buildable("callback")
class StopOnNonFiniteLoss(L.Callback):
    """Stops training, naming the first step whose loss was NaN or infinite.

    Every step only records (on the device, without waiting for it) the first non-finite step;
    the host reads that record every ``check_every_n_steps`` steps and at the last batch of each
    epoch, so a GPU is synchronised rarely. Checking before the epoch's validation means the
    end-of-epoch checkpoint is never written from diverged weights: the last one saved is good.
    Lightning's ``detect_anomaly`` would also catch it, but checks every operation (slow), and
    EarlyStopping's ``check_finite`` only sees the epoch-level metric after validation.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        # One loss per optimizer step of this batch (several when data.steps_per_call > 1).
        per_step = outputs.get("step_losses") if isinstance(outputs, Mapping) else None
        per_step = (loss if per_step is None else per_step).detach().reshape(-1)
        step = trainer.global_step  # optimizer steps so far, counting this batch's
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.zeros((), dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(per_step)
        first_in_batch = step - len(per_step) + 1 + bad.int().argmax()  # the first bad one's step
        self._first_bad = torch.where(
            bad.any() & (self._first_bad == 0), first_in_batch, self._first_bad
        )
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        every = self.check_every_n_steps
        if last_of_epoch or step // every != (step - len(per_step)) // every:  # crossed a multiple
            first = int(self._first_bad.item())
            if first:
                raise NonFiniteLoss(
                    f"the training loss became non-finite (NaN or inf) at step {first} "
                    f"(epoch {trainer.current_epoch}): lower optimizer.lr, or check the data "
                    "scaling (data.scale, data.mean, data.std)"
                )


@buildable("callback")
class StampRunId(L.Callback):
    """Writes the MLflow run id (the trainer's logger's) into every checkpoint, so
    ``resume=<file>`` finds its run."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if run_id := getattr(trainer.logger, "run_id", None):
            checkpoint[RUN_ID_KEY] = run_id
