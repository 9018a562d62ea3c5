"""Pictures of a model's test predictions: confusion, accuracy per class, mistakes, beliefs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from digitlab.figures.plots.common import (
    as_array,
    class_name,
    colorbar,
    image_stack,
    inch_axes,
    mosaic_figure,
)


def _pct(p: float) -> str:
    """A probability as a whole percentage, rounded down so 0.997 reads "99%" not "100%"."""
    return f"{math.floor(float(p) * 100 + 1e-9)}%"


def _long(names: Sequence[str]) -> bool:
    """Tick labels that would overlap side by side: many classes, or long names."""
    return len(names) > 20 or max(map(len, names), default=0) > 2


def plot_confusion_matrix(
    matrix: Any, title: str = "Confusion matrix", classes: Sequence[str] | None = None
) -> Figure:
    """(C, C) counts, rows = true class, columns = predicted class, each cell annotated (up to
    20 classes: beyond, the colours alone tell); ``classes`` names the rows and columns."""
    m = as_array(matrix)
    side = max(5.2, 0.3 * m.shape[0])
    fig = Figure(figsize=(side + 2.3, side + 1.3))
    ax = inch_axes(fig, 0.8, 0.7, side, side)
    im = ax.imshow(m, cmap="Blues", vmin=0)
    top = float(m.max()) if m.size else 0.0
    for t in range(m.shape[0] if m.shape[0] <= 20 else 0):
        for p in range(m.shape[1]):
            value = m[t, p]
            text = f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"
            ax.text(
                p,
                t,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if value > 0.5 * top else "black",
            )
    names = [class_name(classes, i) for i in range(m.shape[0])]
    ax.set_xticks(range(m.shape[1]), names[: m.shape[1]], rotation=90 if _long(names) else 0)
    ax.set_yticks(range(m.shape[0]), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"{title}\nrow = true class, column = prediction; off-diagonal = mistakes", fontsize=12
    )
    cax = inch_axes(fig, side + 1.05, 1.2, 0.18, side - 1.0)
    colorbar(fig, im, cax, "number of images")
    return fig


def plot_per_class_accuracy(
    accuracy: Any, title: str = "Accuracy per class", classes: Sequence[str] | None = None
) -> Figure:
    """Bar chart of one accuracy in 0..1 per class (named by ``classes``), value on each bar,
    dashed line at their mean."""
    acc = as_array(accuracy).astype(np.float64).ravel()
    mean = float(acc.mean())
    low = max(0.0, min(0.9, float(acc.min()) - 0.02))
    names = [class_name(classes, i) for i in range(len(acc))]
    fig = Figure(figsize=(max(9, 0.35 * len(acc)), 4.5), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(acc)), acc, color="tab:blue")
    ax.bar_label(
        bars,
        labels=[f"{a:.1%}" for a in acc],
        fontsize=9 if len(acc) <= 20 else 6,
        rotation=0 if len(acc) <= 20 else 90,
        padding=2,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
    )
    ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean of classes {mean:.1%}")
    ax.set_ylim(low, 1.0 + 0.08 * (1.0 - low))
    ax.set_xticks(range(len(acc)), names, rotation=90 if _long(names) else 0)
    ax.set_xlabel("class")
    ax.set_ylabel("fraction correct")
    zoom = f" (y-axis starts at {low:.2f})" if low > 0 else ""
    ax.set_title(title + zoom, fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_confident_mistakes(
    images: Any,
    true_labels: Any,
    predicted: Any,
    confidence: Any,
    title: str = "Most confident mistakes",
    n: int = 16,
    classes: Sequence[str] | None = None,
) -> Figure:
    """The first n of the given wrong images (N, H, W), captioned "true t → pred p (c%)".

    confidence: the model's probability (0..1) for its (wrong) prediction.
    """
    imgs, top = image_stack(images)
    t, p, c = as_array(true_labels)[:n], as_array(predicted)[:n], as_array(confidence)[:n]
    captions = [
        f"true {class_name(classes, a)} → pred {class_name(classes, b)} ({_pct(q)})"
        for a, b, q in zip(t, p, c, strict=False)
    ]
    return mosaic_figure(
        imgs[:n],
        captions,
        title,
        cell_in=1.6,
        cmap="gray",
        vmin=0,
        vmax=top,
        fontsize=9.5,
        color="darkred",
    )


def _belief_row(
    img_ax: Any,
    bar_ax: Any,
    img: np.ndarray,
    top: float,
    prob: np.ndarray,
    y: int,
    classes: Sequence[str] | None,
):
    """One row of plot_probability_bars: the image, then its class probabilities as bars."""
    pred = int(prob.argmax())
    colours = ["0.7"] * len(prob)
    if pred != y:
        colours[pred] = "tab:red"
    colours[y] = "tab:green"
    img_ax.imshow(img, cmap="gray", vmin=0, vmax=top)
    img_ax.set_axis_off()
    bar_ax.bar(range(len(prob)), prob, color=colours)
    bar_ax.set_ylim(0, 1.05)
    bar_ax.set_yticks([0, 0.5, 1])
    names = [class_name(classes, i) for i in range(len(prob))]
    bar_ax.set_xticks(range(len(prob)), names, rotation=90 if _long(names) else 0, fontsize=8)
    bar_ax.set_ylabel("probability", fontsize=9)
    verdict = "correct" if pred == y else "WRONG"
    bar_ax.set_title(
        f"true {names[y]}, predicted {names[pred]} ({_pct(prob[pred])}) - {verdict}",
        fontsize=10,
        loc="left",
        color="black" if pred == y else "darkred",
    )
    bar_ax.grid(axis="y", alpha=0.3)


def plot_probability_bars(
    images: Any,
    probabilities: Any,
    labels: Any,
    title: str = "What the model believes",
    n: int = 6,
    classes: Sequence[str] | None = None,
) -> Figure:
    """For each of n images (N, H, W): the image and a bar chart of its class probabilities
    (N, C), the bars named by ``classes``.

    The true label's bar is green; a wrong prediction's bar is red; other bars are grey.
    """
    imgs, top = image_stack(images)
    probs, labels = as_array(probabilities)[:n].astype(np.float64), as_array(labels)[:n]
    k = max(1, min(n, len(probs)))
    fig = Figure(figsize=(8.5, 1.6 * k + 1.2))  # manual spacing: constrained layout is slow here
    axes = fig.subplots(k, 2, squeeze=False, width_ratios=[1, 4], sharey="col")
    fig.subplots_adjust(
        left=0.02,
        right=0.98,
        top=1 - 0.55 / fig.get_figheight(),
        bottom=0.85 / fig.get_figheight(),
        hspace=0.55,
        wspace=0.15,
    )
    for row, (img, prob, y) in enumerate(zip(imgs, probs, labels, strict=False)):
        image_ax, bars_ax = axes[row]
        _belief_row(image_ax, bars_ax, img, top, prob, int(y), classes)
    axes[-1][1].set_xlabel("class")
    fig.legend(
        handles=[
            Patch(color="tab:green", label="true label"),
            Patch(color="tab:red", label="wrong prediction"),
            Patch(color="0.7", label="other classes"),
        ],
        loc="lower center",
        ncols=3,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title, fontsize=13, y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig
