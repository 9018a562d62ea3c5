"""The callback that logs pictures of weights, data and predictions into the run's MLflow store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchmetrics.functional.classification import multiclass_confusion_matrix

from digitlab.errors import DigitlabError
from digitlab.figures.plots.data import plot_label_histogram, plot_samples
from digitlab.figures.plots.filters import filter_stats, plot_filters, plot_mlp_templates
from digitlab.figures.plots.predictions import (
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_probability_bars,
)

SPLITS = ("train", "val", "test")


def _run(trainer: L.Trainer) -> Any:
    """The trainer's logger of one open MLflow run (digitlab's RunLogger, Lightning's
    MLFlowLogger): its ``experiment`` is the MlflowClient, its ``run_id`` the run."""
    return trainer.logger


def _datamodule(trainer: L.Trainer) -> Any:
    """The data module the trainer was given (None without one)."""
    # Lightning sets Trainer.datamodule in its data connector, undeclared on the class.
    return trainer.datamodule  # type: ignore[attr-defined]


def _net(pl_module: Any) -> nn.Module:
    """The network the module trains: digitlab's modules hold it as ``net``."""
    return pl_module.net


def grey_levels(x: torch.Tensor, scale: float, mean: float, std: float) -> torch.Tensor:
    """Model inputs back as grey levels in 0..1: undoes ``prepare``'s x / scale, (x - mean) / std.

    The scale matters: a data module with scale=80 (not 255) keeps raw pixels up to 255/80 ~ 3.2,
    which undoing mean and std alone would clamp to white.
    """
    return ((x * std + mean) * scale / 255).clamp(0, 1)


def _probability_picks(
    n: int, wanted: int, confidence: torch.Tensor, worst: torch.Tensor
) -> list[int]:
    """Up to ``wanted`` test indices: the first ones, the least sure guess, the worst miss."""
    # A mix a student learns from: typical digits, where the model hesitates, where it errs.
    picks = list(range(min(n, max(1, wanted - 2))))
    for extra in (int(confidence.argmin()), *worst[:1].tolist()):
        if extra not in picks and len(picks) < wanted:
            picks.append(extra)
    return picks


def drawn_layers(net: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
    """{"conv1": layer, "conv2": layer} for the first two convs, else {"fc1": layer}.

    A network without convolutions gets its first Linear layer drawn as image templates when
    that layer reads a whole square image (the MLP); other layers have no picture form.
    """
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)][:2]
    if convs:
        return {f"conv{i + 1}": m for i, m in enumerate(convs)}
    linear = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    if linear is not None and round(linear.in_features**0.5) ** 2 == linear.in_features:
        return {"fc1": linear}
    return {}


class FigureLogger(L.Callback):
    """Logs PNG figures and JSON tables under ``figures/`` of the trainer's MLflow run (the
    layout: README, "Pictures in MLflow").

    Filter pictures are drawn after training from weight snapshots, so ``init``, ``epoch<N>``
    and ``final`` share one colour limit (99.5th percentile of |weight| over them) and compare.
    Prediction pictures reuse the logits of the test pass itself (a forward hook on the net),
    so no second pass over the test split is needed; with several devices they show rank zero's
    share. Everything runs on global rank zero only.
    """

    def __init__(
        self,
        filters_every_n_epochs: int = 0,
        samples: int = 64,
        mistakes: int = 16,
        probabilities: int = 6,
    ) -> None:
        # The figures group's schema (config.spec.FiguresSpec) has checked each count.
        self.every, self.samples = filters_every_n_epochs, samples
        self.mistakes, self.probabilities = mistakes, probabilities
        self.snapshots: dict[str, list[tuple[str, torch.Tensor]]] = {}
        self._hook: RemovableHandle | None = None  # collects the test pass's logits
        self._logits: list[torch.Tensor] = []
        self._tested: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (x, y, logits)

    # -- logging -----------------------------------------------------------------------------

    def log_figure(self, trainer: L.Trainer, fig: Any, path: str) -> None:
        """Log ``fig`` to the run as ``figures/<path>`` and clear it: every picture passes here
        (a subclass may look at what it shows first)."""
        run = _run(trainer)
        run.experiment.log_figure(run.run_id, fig, f"figures/{path}")
        fig.clear()  # Figure objects built without pyplot: nothing global to close

    def _log_table(self, trainer: L.Trainer, data: Mapping[str, list], path: str) -> None:
        run = _run(trainer)
        run.experiment.log_table(run.run_id, data=dict(data), artifact_file=f"figures/{path}")

    # -- filters -----------------------------------------------------------------------------

    def _snapshot(self, pl_module: L.LightningModule, when: str) -> None:
        for name, layer in drawn_layers(_net(pl_module)).items():
            self.snapshots.setdefault(name, []).append((when, layer.weight.detach().cpu().clone()))

    def _draw_filters(self, trainer: L.Trainer) -> None:
        for name, shots in self.snapshots.items():
            # One limit for every picture of the layer: the 99.5th percentile of |weight| over
            # all snapshots, so a few outliers do not wash the rest out (arrows on the colour
            # bar mark the clipped ends).
            vmax = float(np.percentile(torch.cat([w.abs().flatten() for _, w in shots]), 99.5))
            for when, w in shots:
                label = {"init": "at initialisation", "final": "after training"}.get(
                    when, f"after epoch {when.removeprefix('epoch')}"
                )
                shared = f"colour scale shared by every {name} picture"
                if w.ndim == 2:  # a Linear layer's (units, pixels): the MLP's templates
                    side = round(w.shape[1] ** 0.5)
                    title = f"{name}: what each hidden unit looks for, {label}\n({shared})"
                    fig = plot_mlp_templates(w, title, vmax, side)
                else:
                    fig = plot_filters(w, f"{name} filters {label}\n({shared})", vmax)
                self.log_figure(trainer, fig, f"filters/{name}_{when}.png")
                self._log_table(trainer, filter_stats(w), f"filters/{name}_stats_{when}.json")
        self.snapshots = {}

    # -- data ----------------------------------------------------------------------------------

    def _draw_data(self, trainer: L.Trainer) -> None:
        raw = getattr(_datamodule(trainer), "raw", None) or {}
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for split in SPLITS:
            if split in raw and not any(raw[split] is seen for seen in splits.values()):
                splits[split] = raw[split]
        for split, (images, labels) in splits.items():
            shown = min(self.samples, len(labels))
            shared = split == "val" and raw.get("test") is raw["val"]
            also = " (also the test split)" if shared else ""
            title = f"First {shown} {split} digits{also}, label above each"
            fig = plot_samples(images[:shown], labels[:shown], title, shown, _classes(trainer))
            self.log_figure(trainer, fig, f"data/samples_{split}.png")
        if splits:
            by_split = {s: labels for s, (_, labels) in splits.items()}
            fig = plot_label_histogram(by_split, _classes(trainer))
            self.log_figure(trainer, fig, "data/label_histogram.png")

    # -- predictions ---------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the test pass's own logits (a forward hook) instead of running the net again."""
        self._tested, self._logits = [], []
        if trainer.is_global_zero:
            self._hook = _net(pl_module).register_forward_hook(
                lambda module, args, out: self._logits.append(out.detach())
            )

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._hook is not None:
            x, y = batch
            self._tested.append((x, y, self._logits.pop()))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _draw_predictions(self, trainer: L.Trainer) -> None:
        """Pictures of the test pass: rank zero's share of it (all of it on one device)."""
        if not self._tested:
            return
        x, y, logits = (torch.cat(parts) for parts in zip(*self._tested, strict=True))
        self._tested = []
        y, logits = y.cpu(), logits.cpu()
        dm = _datamodule(trainer)
        # Batches hold images as the data module's prepare left them; a data module without
        # these attributes is taken to serve 0..1 grey levels already.
        undo = (getattr(dm, "scale", 255.0), getattr(dm, "mean", 0.0), getattr(dm, "std", 1.0))

        def images(index: torch.Tensor | list[int]) -> torch.Tensor:
            picked = x[torch.as_tensor(index, dtype=torch.long, device=x.device), 0].float().cpu()
            return grey_levels(picked, *undo)

        probs, classes = logits.float().softmax(1), _classes(trainer)
        confidence, pred = probs.max(1)
        matrix = multiclass_confusion_matrix(pred, y, num_classes=probs.shape[1])
        per_class = matrix.diagonal() / matrix.sum(1).clamp(min=1)
        n = len(y)
        self.log_figure(
            trainer,
            plot_confusion_matrix(matrix, f"Confusion matrix on {n:,} test images", classes),
            "predictions/confusion_matrix.png",
        )
        self.log_figure(
            trainer,
            plot_per_class_accuracy(per_class, f"Test accuracy per class ({n:,} images)", classes),
            "predictions/per_class_accuracy.png",
        )
        wrong = (pred != y).nonzero().squeeze(1)
        worst = wrong[confidence[wrong].argsort(descending=True)][: self.mistakes]
        fig = plot_confident_mistakes(
            images(worst),
            y[worst],
            pred[worst],
            confidence[worst],
            f"The {len(worst)} test digits the model got wrong most confidently\n"
            f"({len(wrong):,} mistakes in {n:,}; caption: true label → prediction (confidence))",
            self.mistakes,
            classes,
        )
        self.log_figure(trainer, fig, "predictions/confident_mistakes.png")
        picks = _probability_picks(n, self.probabilities, confidence, worst)
        fig = plot_probability_bars(
            images(picks),
            probs[picks],
            y[picks],
            "What the model believes: first test digits, its least sure guess, "
            "its most confident mistake",
            len(picks),
            classes,
        )
        self.log_figure(trainer, fig, "predictions/probabilities.png")

    # -- hooks ---------------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed fit starts from trained weights and continues a run whose data pictures
        # exist: drawing "init" now would replace the real initialisation with them.
        if not trainer.is_global_zero or trainer.ckpt_path is not None:
            return
        self._snapshot(pl_module, "init")
        self._draw_data(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # Lightning makes the limit an int when the fit starts (-1: none).
        assert trainer.max_epochs is not None
        last = epoch >= trainer.max_epochs  # the final snapshot covers the last epoch
        if trainer.is_global_zero and self.every and epoch % self.every == 0 and not last:
            self._snapshot(pl_module, f"epoch{epoch}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._snapshot(pl_module, "final")
        self._draw_filters(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._draw_predictions(trainer)


def figure_callbacks(cfg: Any) -> list[L.Callback]:
    """``[FigureLogger(...)]`` as the ``figures`` config group asks, or ``[]`` when it is off."""
    options = dict(cfg.get("figures") or {})
    if not options.pop("enabled", False):
        return []
    try:
        return [FigureLogger(**options)]
    except TypeError:
        known = "enabled, filters_every_n_epochs, samples, mistakes, probabilities"
        raise DigitlabError(
            f"figures has an unknown key among {sorted(options)}: the keys are {known}"
        ) from None


def _classes(trainer: L.Trainer) -> tuple[str, ...] | None:
    """The data set's class names (its data module's ``classes``), None where it has none."""
    return getattr(_datamodule(trainer), "classes", None)
