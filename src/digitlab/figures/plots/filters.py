"""Pictures and statistics of learned weights: conv filters and MLP first-layer templates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from digitlab.figures.plots.common import as_array, colorbar, inch_axes, mosaic_figure

WEIGHT_LABEL = "weight value (red > 0, blue < 0)"


def _limit(w: np.ndarray, vmax: float | None) -> float:
    """Symmetric colour limit: the given vmax, else max |w| (never 0)."""
    if vmax is None:
        vmax = float(np.abs(w).max()) if w.size else 0.0
    return float(vmax) if vmax > 0 else 1.0


def _channel_grid(w: np.ndarray, title: str, vmax: float) -> Figure:
    """Weights (out, in, kh, kw) as one row per output filter, one column per input channel."""
    n_out, n_in, kh, kw = w.shape
    mosaic = np.full((n_out * (kh + 1) - 1, n_in * (kw + 1) - 1), np.nan)
    for o in range(n_out):
        for i in range(n_in):
            mosaic[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = w[o, i]
    px = min(0.3, 11.0 / n_out, 9.0 / n_in) / (kw + 1)  # inches per mosaic pixel
    img_w, img_h = mosaic.shape[1] * px, mosaic.shape[0] * px
    fig = Figure(figsize=(img_w + 2.2, img_h + 1.5))  # manual layout: fast for big layers
    ax = inch_axes(fig, 0.7, 0.6, img_w, img_h)
    im = ax.imshow(
        mosaic,
        cmap=colormaps["RdBu_r"].with_extremes(bad="0.55"),
        vmin=-vmax,
        vmax=vmax,
        interpolation="nearest",
        aspect="auto",
    )
    x_step, y_step = max(1, math.ceil(n_in / 20)), max(1, math.ceil(n_out / 25))
    ax.set_xticks([i * (kw + 1) + (kw - 1) / 2 for i in range(0, n_in, x_step)])
    ax.set_xticklabels([str(i) for i in range(0, n_in, x_step)], fontsize=8)
    ax.set_yticks([o * (kh + 1) + (kh - 1) / 2 for o in range(0, n_out, y_step)])
    ax.set_yticklabels([str(o) for o in range(0, n_out, y_step)], fontsize=8)
    ax.tick_params(length=0, labeltop=True)
    ax.set_xlabel("input channel")
    ax.set_ylabel("output filter")
    fig.suptitle(
        f"{title}\n({n_out} filters x {n_in} input channels, each {kh}x{kw})",
        fontsize=12,
        y=1 - 0.08 / fig.get_figheight(),
        va="top",
    )
    cax = inch_axes(fig, 0.7 + img_w + 0.25, 0.6 + 0.2 * img_h, 0.16, 0.6 * img_h)
    colorbar(fig, im, cax, WEIGHT_LABEL)
    return fig


def plot_filters(weight: Any, title: str, vmax: float | None = None) -> Figure:
    """Conv weights (out, in, kh, kw) as heatmaps on a shared colour scale [-vmax, vmax].

    in == 1: a near-square grid of tiles captioned "filter i".  in > 1: one row per output
    filter and one column per input channel.  Both are drawn as ONE imshow of a tiled mosaic
    (1000 kernels of a 50x20 layer stay fast) with one shared colorbar.
    vmax defaults to max |w|; pass the same value for "initial" and "trained" to compare.
    """
    w = as_array(weight).astype(np.float64)
    n_out, n_in, _, _ = w.shape
    vmax = _limit(w, vmax)
    if n_in > 1:
        return _channel_grid(w, title, vmax)
    return mosaic_figure(
        w[:, 0],
        [f"filter {i}" for i in range(n_out)],
        title,
        cell_in=1.0,
        cmap="RdBu_r",
        vmin=-vmax,
        vmax=vmax,
        outline=True,
        colorbar_label=WEIGHT_LABEL,
    )


def plot_mlp_templates(
    weight: Any, title: str, vmax: float | None = None, image_size: int = 28, max_units: int = 64
) -> Figure:
    """First Linear layer weight (hidden, image_size**2): each unit's row as an image template.

    Shows the first max_units units on a shared colour scale [-vmax, vmax] (default max |w|
    over the whole layer).
    """
    w = as_array(weight).astype(np.float64)
    vmax = _limit(w, vmax)
    k = min(len(w), max_units)
    tiles = w[:k].reshape(k, image_size, image_size)
    if k < len(w):
        title = f"{title}\n(first {k} of {len(w)} hidden units)"
    return mosaic_figure(
        tiles,
        [f"unit {i}" for i in range(k)],
        title,
        cell_in=0.8,
        cmap="RdBu_r",
        vmin=-vmax,
        vmax=vmax,
        fontsize=9,
        outline=True,
        colorbar_label=WEIGHT_LABEL,
    )


def filter_stats(weight: Any) -> dict[str, list]:
    """Per output filter min/max/mean/std (population std) of a weight (out, ...) as columns.

    One row per filter ("0", "1", ...) plus a last row "all" for the whole layer; the dict
    shape is what mlflow.log_table(data=...) expects.
    """
    w = as_array(weight).astype(np.float64)
    rows = list(w.reshape(len(w), -1)) + [w.ravel()]
    return {
        "filter": [str(i) for i in range(len(w))] + ["all"],
        "min": [float(r.min()) for r in rows],
        "max": [float(r.max()) for r in rows],
        "mean": [float(r.mean()) for r in rows],
        "std": [float(r.std()) for r in rows],
    }
