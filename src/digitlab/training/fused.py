"""The speed path: several optimizer steps per Lightning training step (``data.steps_per_call``).

Lightning's fixed cost per training step (~0.1-1 ms on a CPU) is as long as a whole MLP step on
100 images. The data module serves ``steps_per_call`` steps' worth of samples at once and this
module cuts them into ``batch_size`` slices, stepping the optimizer after each (Lightning's
manual optimization), so that cost is paid once for all of them (experiments/RESULTS.md). The
slices, their order and the updates are those of one step per batch. Every optimizer step goes
through the ``LightningOptimizer``, which is how ``trainer.global_step`` counts it.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from digitlab.training.classifier import PLATEAU_MONITOR, DigitClassifier
from digitlab.training.cuda_graphs import GraphedSteps, graph_steps

# The callback hooks Lightning dispatches around every optimizer step under manual optimization:
# with none of them implemented, backward needs no dispatch (see direct_steps).
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class FusedStepsClassifier(DigitClassifier):
    """:class:`DigitClassifier` taking one optimizer step per ``batch_size`` slice of a batch.

    Under manual optimization Lightning leaves clipping and schedulers to the module, so they are
    done here (``gradient_clip_*``: the trainer's settings); gradient accumulation would change
    what a step is and is refused by the config checks. ``cuda_graphs``: replay each full chunk
    of steps as one CUDA graph (:mod:`digitlab.training.cuda_graphs`).
    """

    def __init__(
        self,
        *args: Any,
        batch_size: int,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        cuda_graphs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.batch_size, self.cuda_graphs = batch_size, cuda_graphs
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.automatic_optimization = False
        self.direct = False  # set when training starts: see direct_steps
        self.graphed: GraphedSteps | None = None  # set when training starts, with cuda_graphs

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """One optimizer step per ``batch_size`` slice of ``batch``; returns the batch's mean
        loss and the loss of every step."""
        x, y = batch
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)  # configure_optimizers gives one
        if self.graphed is not None and self.graphed.fits(x):
            self.graphed.run(x, y)
            count_taken_steps(optimizer, self.graphed.steps)
            out = self.graphed.logits, self.graphed.losses, self.graphed.step_losses.clone()
            return self._train_metrics(y, *out)
        schedulers = [
            c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"
        ]
        losses, logits, step_losses = [], [], []
        for xb, yb in zip(x.split(self.batch_size), y.split(self.batch_size), strict=True):
            out = self.net(xb)
            loss = F.cross_entropy(out, yb, reduction="none")  # per sample, for the metric below
            optimizer.zero_grad(set_to_none=True)
            step_loss = loss.mean()
            step_loss.backward() if self.direct else self.manual_backward(step_loss)
            step_losses.append(step_loss.detach())
            if self.gradient_clip_val:
                self.clip_gradients(
                    optimizer.optimizer, self.gradient_clip_val, self.gradient_clip_algorithm
                )
            optimizer.step()  # Lightning's wrapper: it counts the step (trainer.global_step)
            for scheduler in schedulers:
                scheduler.step()  # never ReduceLROnPlateau: check_plateau refuses it per step
            losses.append(loss.detach())
            logits.append(out.detach())
        return self._train_metrics(
            y, torch.cat(logits), torch.cat(losses), torch.stack(step_losses)
        )

    def _train_metrics(self, y, logits, losses, step_losses) -> dict[str, torch.Tensor]:
        """Metrics are updated once per batch, not per slice: the same values for less overhead
        (each torchmetrics update costs dozens of Python attribute writes). Each optimizer
        step's loss is returned, in order: a non-finite one is named by its own step."""
        accuracy, mean_loss = self.stage_metrics("train")
        accuracy.update(logits, y)
        mean_loss.update(losses)
        return {"loss": losses.mean(), "step_losses": step_losses}

    def direct_steps(self) -> bool:
        """Whether backward may skip Lightning's ``manual_backward``, which dispatches two hooks
        to every callback per optimizer step, a noticeable share of an MLP step on a CPU. With
        full precision or bf16 (no gradient scaler) on one process, and no callback that
        implements a step hook, it does nothing else, so the module calls ``backward`` itself."""
        trainer = self.trainer
        plugin = trainer.precision_plugin
        if trainer.world_size != 1 or getattr(plugin, "scaler", None) is not None:
            return False
        if type(plugin).__name__ not in ("Precision", "MixedPrecision", "HalfPrecision"):
            return False
        return not any(
            getattr(type(c), h) is not getattr(L.Callback, h)
            # Lightning sets Trainer.callbacks in its callback connector, undeclared on the class.
            for c in trainer.callbacks  # type: ignore[attr-defined]
            for h in STEP_HOOKS
        )

    def on_train_start(self) -> None:
        self.direct = self.direct_steps()  # callbacks and precision are fixed for the fit
        if self.cuda_graphs:
            self.graphed = graph_steps(self)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for config in self.trainer.lr_scheduler_configs:  # manual optimization: ours to step
            if config.interval != "epoch":
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                # as Lightning steps it under automatic optimization: on the metric this epoch's
                # validation (run before this hook; check_plateau made sure) has logged
                config.scheduler.step(float(self.trainer.callback_metrics[PLATEAU_MONITOR]))
            else:
                config.scheduler.step()

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit. Lightning's estimate counts its own training steps
        (limits applied), each holding up to ``steps_per_call`` optimizer steps."""
        # Lightning sets Trainer.datamodule in its data connector, undeclared on the class.
        trainer, datamodule = self.trainer, self.trainer.datamodule  # type: ignore[attr-defined]
        per_call = datamodule.steps_per_call if trainer.world_size == 1 else 1
        bound = trainer.estimated_stepping_batches * per_call
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            samples = datamodule.train_dataloader().num_samples
            bound = min(bound, math.ceil(samples / self.batch_size) * trainer.max_epochs)
        return int(bound)


def count_taken_steps(optimizer: LightningOptimizer, steps: int) -> None:
    """Let Lightning count ``steps`` optimizer steps that a CUDA graph replay took already.

    Lightning counts a step (``trainer.global_step``) each time its ``LightningOptimizer`` steps,
    and has no public call that counts one otherwise. So the wrapper steps with every gradient
    set aside: torch's optimizers skip a parameter without ``.grad`` (Adam and AdamW, the only
    ones a graph takes, keep their state), and the gradient tensors the graph writes into are
    put back."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        for _ in range(steps):
            optimizer.step()
    finally:
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
