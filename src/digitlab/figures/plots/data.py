"""Pictures of the data set itself: sample images with their classes, class counts per split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from digitlab.figures.plots.common import as_array, class_name, image_stack, mosaic_figure


def plot_samples(
    images: Any, labels: Any, title: str, n: int = 64, classes: Sequence[str] | None = None
) -> Figure:
    """The first n images (N, H, W), uint8 0-255, each with its class name (``classes``, by
    label; None: the label) above it."""
    imgs, top = image_stack(images)
    labels = as_array(labels)[:n]
    return mosaic_figure(
        imgs[:n],
        [class_name(classes, y) for y in labels],
        title,
        cell_in=0.7,
        cmap="gray",
        vmin=0,
        vmax=top,
        fontsize=10,
    )


def plot_label_histogram(
    labels_by_split: dict[str, Any], classes: Sequence[str] | None = None
) -> Figure:
    """Grouped bar chart of how many examples of each class every split holds.

    labels_by_split: {"train": labels (N,), "val": ..., ...} with integer labels.
    classes: the name of each class by label (None: the ten digits).
    """
    names = list(classes) if classes is not None else [str(d) for d in range(10)]
    c = len(names)
    fig = Figure(figsize=(max(9, 0.3 * c), 4.5), layout="constrained")
    ax = fig.subplots()
    k = max(1, len(labels_by_split))
    width = 0.8 / k
    for j, (split, labels) in enumerate(labels_by_split.items()):
        y = as_array(labels).astype(np.int64).ravel()
        counts = np.bincount(y, minlength=c)[:c]
        ax.bar(
            np.arange(c) + (j - (k - 1) / 2) * width,
            counts,
            width,
            label=f"{split} (n={len(y):,})",
        )
    ax.set_xticks(list(range(c)), names, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_xlabel("class")
    ax.set_ylabel("count")
    ax.set_title("How many examples of each class per split", fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig
