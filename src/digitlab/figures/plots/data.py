"""Pictures of the data set itself: sample digits with their labels, label counts per split."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from digitlab.figures.plots.common import as_array, image_stack, mosaic_figure


def plot_samples(images: Any, labels: Any, title: str, n: int = 64) -> Figure:
    """The first n images (N, H, W), uint8 0-255, each with its label above it."""
    imgs, top = image_stack(images)
    labels = as_array(labels)[:n]
    return mosaic_figure(
        imgs[:n],
        [str(int(y)) for y in labels],
        title,
        cell_in=0.7,
        cmap="gray",
        vmin=0,
        vmax=top,
        fontsize=10,
    )


def plot_label_histogram(labels_by_split: dict[str, Any]) -> Figure:
    """Grouped bar chart of how many examples of each digit 0-9 every split holds.

    labels_by_split: {"train": labels (N,), "val": ..., ...} with integer labels.
    """
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    k = max(1, len(labels_by_split))
    width = 0.8 / k
    for j, (split, labels) in enumerate(labels_by_split.items()):
        y = as_array(labels).astype(np.int64).ravel()
        counts = np.bincount(y, minlength=10)[:10]
        ax.bar(
            np.arange(10) + (j - (k - 1) / 2) * width,
            counts,
            width,
            label=f"{split} (n={len(y):,})",
        )
    ax.set_xticks(list(range(10)))
    ax.set_xlabel("digit")
    ax.set_ylabel("count")
    ax.set_title("How many examples of each digit per split", fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig
