"""Helpers shared by the plot modules: array conversion, inch-based layout, captioned mosaics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def as_array(x: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def image_stack(images: Any) -> tuple[np.ndarray, float]:
    """Images (N, H, W) or (N, 1, H, W) as (N, H, W) plus the display maximum (255 or 1)."""
    arr = as_array(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    top = 255.0 if arr.dtype == np.uint8 or (arr.size and arr.max() > 1.0) else 1.0
    return arr, top


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding n cells, wider than tall."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def inch_axes(fig: Figure, x: float, y: float, w: float, h: float) -> Any:
    """Axes placed by its lower-left corner and size in inches (cheap manual layout)."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes((x / fig_w, y / fig_h, w / fig_w, h / fig_h))


def colorbar(fig: Figure, im: Any, cax: Any, label: str) -> None:
    """Colorbar in cax; arrow ends mark values clipped by a caller-given vmax."""
    data, (lo, hi) = np.ma.masked_invalid(im.get_array()), im.get_clim()
    below, above = bool(data.min() < lo), bool(data.max() > hi)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}
    fig.colorbar(im, cax=cax, extend=extend.get((below, above), "neither")).set_label(label)


def mosaic_figure(
    tiles: np.ndarray,
    captions: list[str],
    title: str,
    *,
    cell_in: float,
    cmap: Any,
    vmin: float,
    vmax: float,
    fontsize: float = 9,
    color: str = "black",
    outline: bool = False,
    colorbar_label: str | None = None,
) -> Figure:
    """Tiles (K, h, w) drawn as ONE captioned image in a near-square grid (fast for K ~ 100).

    cell_in: printed width of one tile in inches; captions sit in white strips above tiles.
    """
    k, h, w = tiles.shape if len(tiles) else (0, 28, 28)
    px = cell_in / w  # inches per tile pixel
    gap, cap = max(1, math.ceil(0.14 / px)), max(1, math.ceil((fontsize / 72 * 1.5) / px))
    # The tiles pasted into one NaN-padded grid, a caption strip above each; spots: each tile's
    # top-left corner (x0, y0) in canvas pixels.
    rows, cols = grid_shape(k)
    canvas = np.full((rows * (h + cap), cols * (w + gap) - gap), np.nan)
    spots = [((i % cols) * (w + gap), (i // cols) * (h + cap) + cap) for i in range(k)]
    for (x0, y0), tile in zip(spots, tiles, strict=True):
        canvas[y0 : y0 + h, x0 : x0 + w] = tile
    # manual layout in inches: title band on top, colorbar band on the right
    img_w, img_h = canvas.shape[1] * px, canvas.shape[0] * px
    top = 0.35 + 0.25 * title.count("\n")
    right = 1.3 if colorbar_label else 0.15
    fig_w, fig_h = max(img_w + 0.3 + right, 4.5), img_h + top + 0.15
    fig = Figure(figsize=(fig_w, fig_h))
    left = (fig_w - right - img_w) / 2 if colorbar_label else (fig_w - img_w) / 2
    ax = inch_axes(fig, left, 0.15, img_w, img_h)
    im = ax.imshow(
        canvas,
        cmap=colormaps[cmap].with_extremes(bad="white"),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="auto",
    )
    for (x0, y0), caption in zip(spots, captions, strict=False):
        ax.text(
            x0 + (w - 1) / 2,
            y0 - 0.5 - 0.15 * cap,
            caption,
            ha="center",
            va="bottom",
            fontsize=fontsize,
            color=color,
        )
    if outline:  # tile borders, so near-zero (white) weights stay visible against the gaps
        borders = [Rectangle((x0 - 0.5, y0 - 0.5), w, h) for x0, y0 in spots]
        ax.add_collection(
            PatchCollection(borders, facecolor="none", edgecolor="0.3", linewidth=0.6)
        )
    if k == 0:
        note(ax, "nothing to show")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=13, y=1 - 0.08 / fig_h, va="top")
    if colorbar_label:
        cax = inch_axes(fig, left + img_w + 0.25, 0.15 + 0.1 * img_h, 0.16, 0.8 * img_h)
        colorbar(fig, im, cax, colorbar_label)
    return fig


def class_name(classes: Sequence[str] | None, label: Any) -> str:
    """The name of class ``label`` (``classes[label]``), or the label itself without names."""
    label = int(label)
    return str(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)


def note(ax: Any, text: str) -> None:
    """``text`` in the middle of ``ax``: what an empty panel says instead of its data."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
