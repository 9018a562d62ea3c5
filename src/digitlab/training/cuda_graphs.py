"""CUDA graphs around the fused steps (``cuda_graphs: true``): one replay per training call.

A small network's optimizer step is a few dozen tiny kernels launched from Python, so the GPU
mostly waits (experiments/RESULTS.md §5). Here a whole chunk of ``data.steps_per_call`` steps
(forward, backward, clipping, optimizer step per ``batch_size`` slice) is captured once and
replayed with one launch. The inputs sit in fixed buffers; the schedulers step on the host as on
the eager path and their values (lr, and Adam's beta1 when a one-cycle schedule cycles it) go
into a device table whose row ``k`` the graph copies into the optimizer's tensor
hyperparameters before step ``k``; Adam/AdamW step ``capturable`` (no host sync); the warm-up
steps that capture needs are undone in place. A chunk of another size (an epoch's last) takes
the eager path; on a CPU (tests only) the same buffered steps run uncaptured.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from digitlab.errors import DigitlabError

CAPTURABLE = ("torch.optim.Adam", "torch.optim.AdamW")
# Schedulers that cycle the momentum (Adam's beta1) unless told cycle_momentum=false.
CYCLING = ("torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler.CyclicLR")
WARMUP_CHUNKS = 2  # eager chunks on a side stream before capture (PyTorch's advice: a few steps)


def check_cuda_graphs(cfg: DictConfig) -> None:
    """Refuse, in one line with the fix, a ``cuda_graphs: true`` config that cannot be captured."""
    if not cfg.get("cuda_graphs", False):
        return
    trainer, scheduler = cfg.trainer, cfg.get("scheduler") or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    one = devices in (1, "1") or (not isinstance(devices, str | int) and len(devices) == 1)
    if not one or nodes not in (None, 1) or "ddp" in str(trainer.get("strategy", "")):
        raise DigitlabError(
            f"cuda_graphs=true replays one device's steps, and trainer.devices={devices}, "
            f"num_nodes={nodes}, strategy={trainer.get('strategy')} spread them: use "
            "trainer.devices=1 without ddp, or cuda_graphs=false"
        )
    if trainer.accelerator == "cpu" or not torch.cuda.is_available():
        where = (
            "trainer.accelerator=cpu"
            if trainer.accelerator == "cpu"
            else "PyTorch sees no CUDA GPU on this machine"
        )
        raise DigitlabError(
            f"cuda_graphs=true needs a CUDA GPU: {where} (use trainer.accelerator=gpu on a GPU "
            "machine, or cuda_graphs=false)"
        )
    if cfg.data.get("steps_per_call", 1) < 2:
        raise DigitlabError(
            "cuda_graphs=true captures the steps of one data.steps_per_call chunk: set "
            "data.steps_per_call >= 2 (e.g. 100)"
        )
    if (target := cfg.optimizer.get("_target_")) not in CAPTURABLE:
        raise DigitlabError(
            f"cuda_graphs=true needs an optimizer that steps without reading the GPU back "
            f"({', '.join(CAPTURABLE)}), not {target}: use optimizer=adam or optimizer=adamw"
        )
    if str(trainer.get("precision")) in ("16-mixed", "16"):
        raise DigitlabError(
            "cuda_graphs=true cannot capture float16's gradient scaler: use "
            "trainer.precision=bf16-mixed or 32-true"
        )
    cycled = scheduler.get("_target_") in CYCLING and scheduler.get("cycle_momentum", True)
    if cfg.optimizer.get("fused") and cycled:
        raise DigitlabError(
            "cuda_graphs=true with optimizer.fused=true cannot follow a cycled beta1 (fused Adam "
            "takes it as a number): add scheduler.cycle_momentum=false, or optimizer.fused=false"
        )


class GraphedSteps:
    """Runs chunks of ``steps`` optimizer steps of ``batch_size`` samples each from fixed buffers,
    as one CUDA graph (``capture``) or eagerly. ``optimizer`` is torch's (not Lightning's
    wrapper), ``schedulers`` the step-interval ones, ``sample`` a full chunk for the warm-up,
    ``clip`` the gradient clipping, ``autocast`` the precision's context."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedulers: Sequence[Any],
        batch_size: int,
        steps: int,
        sample: tuple[torch.Tensor, torch.Tensor],
        clip: Callable[[list[torch.Tensor]], Any] | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        capture: bool = True,
    ) -> None:
        self.net, self.optimizer, self.schedulers = net, optimizer, list(schedulers)
        self.batch_size, self.steps, self.rows = batch_size, steps, batch_size * steps
        self.clip, self.autocast = clip, autocast
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.x, self.y = (t.detach().clone() for t in sample)
        device, groups = self.x.device, optimizer.param_groups
        # Adam's beta1 goes through the table too when a scheduler cycles it (check_cuda_graphs
        # refuses that with fused Adam, which takes beta1 as a number).
        self.feed_beta1 = any(
            getattr(s, "cycle_momentum", False) and getattr(s, "use_beta1", False)
            for s in self.schedulers
        )
        columns = len(groups) * (2 if self.feed_beta1 else 1)
        self.table = torch.zeros(steps, columns, device=device)  # row k: step k's values
        self.lr = [torch.tensor(float(g["lr"]), device=device) for g in groups]
        self.beta1 = [torch.tensor(float(g["betas"][0]), device=device) for g in groups]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_seconds = 0.0
        if capture:
            for group in groups:
                group["capturable"] = True  # steps counted on the device, no host read
            for state in optimizer.state.values():  # a resumed state counts steps on the host
                if torch.is_tensor(state.get("step")) and state["step"].device != device:
                    state["step"] = state["step"].to(device)
            self._capture()

    def _steps(self) -> None:
        """The chunk's steps, the same whether captured or eager."""
        bs, losses, logits, step_losses = self.batch_size, [], [], []
        groups = self.optimizer.param_groups
        for k in range(self.steps):
            xb, yb = self.x[k * bs : (k + 1) * bs], self.y[k * bs : (k + 1) * bs]
            with self.autocast():
                out = self.net(xb)
                loss = F.cross_entropy(out, yb, reduction="none")
            self.optimizer.zero_grad(set_to_none=True)  # inside a capture: the graph's own memory
            step_loss = loss.mean()
            step_loss.backward()
            if self.clip is not None:
                self.clip(self.params)
            for i in range(len(groups)):
                self.lr[i].copy_(self.table[k, i])
                if self.feed_beta1:
                    self.beta1[i].copy_(self.table[k, len(groups) + i])
            self.optimizer.step()
            losses.append(loss.detach())
            logits.append(out.detach())
            step_losses.append(step_loss.detach())
        self.losses, self.logits = torch.cat(losses), torch.cat(logits)
        self.step_losses = torch.stack(step_losses)

    @contextlib.contextmanager
    def _tensor_hyperparameters(self):
        """The optimizer reads lr (and beta1) from this object's tensors inside; the host's
        numbers are back outside, for the schedulers and the eager path."""
        groups = self.optimizer.param_groups
        saved = [(g["lr"], g["betas"]) for g in groups]
        for i, group in enumerate(groups):
            group["lr"] = self.lr[i]
            if self.feed_beta1:
                beta2 = torch.tensor(float(group["betas"][1]), device=self.x.device)
                group["betas"] = (self.beta1[i], beta2)
        try:
            yield
        finally:
            for group, (lr, betas) in zip(groups, saved, strict=True):
                group["lr"], group["betas"] = lr, betas

    def _fill_table(self, rows: list[list[float]]) -> None:
        values = torch.tensor(rows, dtype=self.table.dtype, pin_memory=self.table.is_cuda)
        self.table.copy_(values, non_blocking=True)  # pinned: no wait for the queued work

    def _host_values(self) -> list[float]:
        groups = self.optimizer.param_groups
        values = [float(g["lr"]) for g in groups]
        return values + ([float(g["betas"][0]) for g in groups] if self.feed_beta1 else [])

    def _capture(self) -> None:
        """Warm up on a side stream, capture one chunk, then put the state back in place."""
        started = time.perf_counter()
        saved = self._snapshot()
        self._fill_table([self._host_values()] * self.steps)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with self._tensor_hyperparameters():
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CHUNKS):
                    self._steps()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._steps()
        self._restore(saved)
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - started

    def _snapshot(self) -> dict[str, Any]:
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": {
                p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                for p, s in self.optimizer.state.items()
            },
        }

    @torch.no_grad()
    def _restore(self, saved: dict[str, Any]) -> None:
        """Copy the saved values back into the same tensors (the graph holds their addresses);
        state the warm-up created (a fresh run's Adam moments and step counts) goes to zero."""
        for name, value in self.net.state_dict().items():
            value.copy_(saved["net"][name])
        for p, state in self.optimizer.state.items():
            before = saved["optimizer"].get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value):
                    value.copy_(before[key]) if key in before else value.zero_()

    def fits(self, x: torch.Tensor) -> bool:
        return len(x) == self.rows

    def run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One chunk: the schedulers' values for its steps into the table, the data into the
        buffers, then the replay (or the eager steps). Results: ``losses`` (per sample),
        ``logits`` and ``step_losses``, valid until the next call."""
        rows = []
        with warnings.catch_warnings():
            # The schedulers run ahead of the optimizer steps they time, on purpose.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
            for _ in range(self.steps):
                rows.append(self._host_values())
                for scheduler in self.schedulers:
                    scheduler.step()
        self._fill_table(rows)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph is not None:
            self.graph.replay()
        else:
            with self._tensor_hyperparameters():
                self._steps()


def graph_steps(module) -> GraphedSteps | None:
    """The :class:`GraphedSteps` of a :class:`~digitlab.training.fused.FusedStepsClassifier` at
    the start of its fit (captured on a CUDA device, eager elsewhere); None when the training
    split holds no full chunk. Logs ``train/graph_capture_s``, the capture's own time."""
    trainer = module.trainer
    if not module.direct:
        raise DigitlabError(
            "cuda_graphs=true needs the direct optimizer steps: one process, no float16 gradient "
            "scaler, and no callback with on_before_backward, on_after_backward or "
            "on_before_optimizer_step (or set cuda_graphs=false)"
        )
    steps, batch_size = trainer.datamodule.steps_per_call, module.batch_size
    x, y = trainer.datamodule.tensors["train"]
    if len(y) < steps * batch_size:
        return None
    clip, value = None, module.gradient_clip_val
    if value:
        by_value = module.gradient_clip_algorithm == "value"
        clipper = nn.utils.clip_grad_value_ if by_value else nn.utils.clip_grad_norm_

        def clip(params):
            return clipper(params, value, foreach=True)

    graphed = GraphedSteps(
        module.net,
        module.optimizers().optimizer,
        [c.scheduler for c in trainer.lr_scheduler_configs if c.interval == "step"],
        batch_size,
        steps,
        (x[: steps * batch_size], y[: steps * batch_size]),
        clip=clip,
        autocast=trainer.precision_plugin.train_step_context,
        capture=x.is_cuda,
    )
    if graphed.graph is not None:
        for logger in trainer.loggers:
            logger.log_metrics({"train/graph_capture_s": graphed.capture_seconds}, step=0)
    return graphed
