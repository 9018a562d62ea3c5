"""The speed path: several optimizer steps per Lightning training step (``data.steps_per_call``).

Lightning's fixed cost per training step (loops, hooks, progress bar, ~0.1-1 ms on a CPU) is as
long as a whole MLP step on 100 images. The data module serves ``steps_per_call`` steps' worth of
samples at once and this module cuts them into ``batch_size`` slices, stepping the optimizer after
each (Lightning's manual optimization), so that cost is paid once for all of them
(experiments/RESULTS.md). The slices, their order and the updates are those of one step per
batch. Everything that is not about stepping is :class:`DigitClassifier`'s. An opt-in
(``data.steps_per_call > 1``): the default is Lightning's automatic optimization, one step per
Lightning step. Only Lightning's public API is used: every optimizer step goes through the
``LightningOptimizer``, which is how ``trainer.global_step`` counts it.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import LRSchedulerTypeUnion
from torch.optim.lr_scheduler import ReduceLROnPlateau

from digitlab.errors import DigitlabError
from digitlab.training.classifier import PLATEAU_MONITOR, DigitClassifier
from digitlab.training.cuda_graphs import GraphedSteps, graph_steps

# The callback hooks Lightning dispatches around every optimizer step under manual optimization:
# with none of them implemented, backward needs no dispatch (see _direct_steps).
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class FusedStepsClassifier(DigitClassifier):
    """:class:`DigitClassifier` taking one optimizer step per ``batch_size`` slice of a batch.

    Under manual optimization Lightning leaves clipping and schedulers to the module, so they are
    done here (``trainer.gradient_clip_*`` arrive as arguments); gradient accumulation would
    change what a step is and is refused by the config checks (``data.steps_per_call=1`` allows
    it).

    Args:
        batch_size: samples per optimizer step.
        gradient_clip_val, gradient_clip_algorithm: clip gradients before each optimizer step.
        cuda_graphs: replay each full chunk of steps as one CUDA graph
            (:mod:`digitlab.training.cuda_graphs`).
        *args, **kwargs: those of :class:`DigitClassifier`.
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
        self.batch_size = batch_size
        self.gradient_clip_val, self.gradient_clip_algorithm = (
            gradient_clip_val,
            gradient_clip_algorithm,
        )
        self.automatic_optimization = False
        self._direct = False
        self.cuda_graphs = cuda_graphs
        self._graphed: GraphedSteps | None = None  # set when training starts, with cuda_graphs

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """One optimizer step per ``batch_size`` slice of ``batch``; returns the batch's mean
        loss and the loss of every step."""
        x, y = batch
        if self._graphed is not None and self._graphed.fits(x):
            return self._graphed_step(x, y)
        optimizer = self._optimizer()
        schedulers = [
            c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"
        ]
        losses: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        step_losses: list[torch.Tensor] = []
        for xb, yb in zip(x.split(self.batch_size), y.split(self.batch_size), strict=True):
            out = self.net(xb)
            loss = F.cross_entropy(out, yb, reduction="none")  # per sample, for the metric below
            optimizer.zero_grad(set_to_none=True)
            step_loss = loss.mean()
            if self._direct:
                step_loss.backward()
            else:
                self.manual_backward(step_loss)
            step_losses.append(step_loss.detach())
            if self.gradient_clip_val:
                self.clip_gradients(
                    optimizer.optimizer, self.gradient_clip_val, self.gradient_clip_algorithm
                )
            optimizer.step()  # Lightning's wrapper: it counts the step (trainer.global_step)
            for scheduler in schedulers:
                _step_schedule(scheduler)
            losses.append(loss.detach())
            logits.append(out.detach())
        # Metrics are updated once per batch, not per slice: the same values for less overhead
        # (each torchmetrics update costs dozens of Python attribute writes).
        per_sample = torch.cat(losses)
        accuracy, mean_loss = self.stage_metrics("train")
        accuracy.update(torch.cat(logits), y)
        mean_loss.update(per_sample)
        # Each optimizer step's loss, in order: a non-finite one is named by its own step.
        return {"loss": per_sample.mean(), "step_losses": torch.stack(step_losses)}

    def _optimizer(self) -> LightningOptimizer:
        """The one optimizer :meth:`configure_optimizers` gives, in Lightning's wrapper."""
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)
        return optimizer

    def _direct_steps(self) -> bool:
        """Whether backward may skip Lightning's ``manual_backward``.

        ``manual_backward`` dispatches two hooks to every callback per optimizer step, a
        noticeable share of an MLP step on a CPU (experiments/RESULTS.md). With full precision or
        bf16 (no gradient scaler) on one process, and no callback that implements one of the
        step hooks, it does nothing else, so the module calls ``backward`` itself (public torch).
        Everything else (16-bit with a scaler, DDP, a callback with one of the hooks) goes
        through Lightning. The optimizer step always goes through ``LightningOptimizer.step``.
        """
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
        self._direct = self._direct_steps()  # callbacks and precision are fixed for the fit
        if self.cuda_graphs:
            self._graphed = graph_steps(self)

    def _graphed_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same as :meth:`training_step`'s loop, replayed from the CUDA graph."""
        graphed = self._graphed
        assert graphed is not None  # training_step replays only a graph it has
        graphed.run(x, y)
        count_taken_steps(self._optimizer(), graphed.steps)
        accuracy, mean_loss = self.stage_metrics("train")
        accuracy.update(graphed.logits, y)
        mean_loss.update(graphed.losses)
        return {"loss": graphed.losses.mean(), "step_losses": graphed.step_losses.clone()}

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for config in self.trainer.lr_scheduler_configs:  # manual optimization: ours to step
            if config.interval != "epoch":
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                # as Lightning steps it under automatic optimization (where the module names
                # the monitor; here Lightning would ignore it): on the metric this epoch's
                # validation, run before this hook, has logged
                value = self.trainer.callback_metrics.get(PLATEAU_MONITOR)
                if value is None:
                    raise DigitlabError(
                        f"ReduceLROnPlateau steps on {PLATEAU_MONITOR}, which this run did not "
                        "log: validate every epoch (trainer.limit_val_batches and "
                        "trainer.check_val_every_n_epoch) or choose another scheduler"
                    )
                config.scheduler.step(float(value))
            else:
                _step_schedule(config.scheduler)

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


def _step_schedule(scheduler: LRSchedulerTypeUnion) -> None:
    """One step of a learning-rate schedule, as manual optimization leaves it to the module."""
    # ReduceLROnPlateau steps on a measured value, once per epoch: on_train_epoch_end hands it
    # one, and the config refuses it a per-step interval.
    assert not isinstance(scheduler, ReduceLROnPlateau), "ReduceLROnPlateau steps on a metric"
    scheduler.step()


def count_taken_steps(optimizer: LightningOptimizer, steps: int) -> None:
    """Let Lightning count ``steps`` optimizer steps that a CUDA graph replay took already.

    Lightning counts a step (``trainer.global_step``: checkpoints, limits, logging) each time
    its ``LightningOptimizer`` steps, and has no public call that counts one otherwise. So the
    wrapper steps ``steps`` times with every gradient set aside: torch's optimizers skip a
    parameter without ``.grad`` (Adam and AdamW, the only ones a graph takes, keep their state
    and step counts), so nothing changes, and the same gradient tensors, which the graph writes
    into, are put back."""
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
