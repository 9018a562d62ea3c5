"""Pure plotting helpers (weights, data, predictions) that return matplotlib Figures."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

WEIGHT_LABEL = "weight value (red > 0, blue < 0)"


def _np(x: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _images(images: Any) -> tuple[np.ndarray, float]:
    """Images (N, H, W) or (N, 1, H, W) as (N, H, W) plus the display maximum (255 or 1)."""
    arr = _np(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    top = 255.0 if arr.dtype == np.uint8 or (arr.size and arr.max() > 1.0) else 1.0
    return arr, top


def _pct(p: float) -> str:
    """A probability as a whole percentage, rounded down so 0.997 reads "99%" not "100%"."""
    return f"{math.floor(float(p) * 100 + 1e-9)}%"


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding n cells, wider than tall."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def _limit(w: np.ndarray, vmax: float | None) -> float:
    """Symmetric colour limit: the given vmax, else max |w| (never 0)."""
    if vmax is None:
        vmax = float(np.abs(w).max()) if w.size else 0.0
    return float(vmax) if vmax > 0 else 1.0


def _inch_axes(fig: Figure, x: float, y: float, w: float, h: float) -> Any:
    """Axes placed by its lower-left corner and size in inches (cheap manual layout)."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes((x / fig_w, y / fig_h, w / fig_w, h / fig_h))


def _colorbar(fig: Figure, im: Any, cax: Any, label: str) -> None:
    """Colorbar in cax; arrow ends mark values clipped by a caller-given vmax."""
    data, (lo, hi) = np.ma.masked_invalid(im.get_array()), im.get_clim()
    below, above = bool(data.min() < lo), bool(data.max() > hi)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}
    fig.colorbar(im, cax=cax, extend=extend.get((below, above), "neither")).set_label(label)


def _mosaic_figure(
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
    rows, cols = _grid(k)
    px = cell_in / w  # inches per tile pixel
    gap, cap = max(1, math.ceil(0.14 / px)), max(1, math.ceil((fontsize / 72 * 1.5) / px))
    canvas = np.full((rows * (h + cap), cols * (w + gap) - gap), np.nan)
    spots = []
    for i, tile in enumerate(tiles):
        y0, x0 = (i // cols) * (h + cap) + cap, (i % cols) * (w + gap)
        canvas[y0 : y0 + h, x0 : x0 + w] = tile
        spots.append((x0, y0))
    # manual layout in inches: title band on top, colorbar band on the right
    img_w, img_h = canvas.shape[1] * px, canvas.shape[0] * px
    top = 0.35 + 0.25 * title.count("\n")
    right = 1.3 if colorbar_label else 0.15
    fig_w, fig_h = max(img_w + 0.3 + right, 4.5), img_h + top + 0.15
    fig = Figure(figsize=(fig_w, fig_h))
    left = (fig_w - right - img_w) / 2 if colorbar_label else (fig_w - img_w) / 2
    ax = _inch_axes(fig, left, 0.15, img_w, img_h)
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
        ax.add_collection(
            PatchCollection(
                [Rectangle((x0 - 0.5, y0 - 0.5), w, h) for x0, y0 in spots],
                facecolor="none",
                edgecolor="0.3",
                linewidth=0.6,
            )
        )
    if k == 0:
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=13, y=1 - 0.08 / fig_h, va="top")
    if colorbar_label:
        cax = _inch_axes(fig, left + img_w + 0.25, 0.15 + 0.1 * img_h, 0.16, 0.8 * img_h)
        _colorbar(fig, im, cax, colorbar_label)
    return fig


def plot_filters(weight: Any, title: str, vmax: float | None = None) -> Figure:
    """Conv weights (out, in, kh, kw) as heatmaps on a shared colour scale [-vmax, vmax].

    in == 1: a near-square grid of tiles captioned "filter i".  in > 1: one row per output
    filter and one column per input channel.  Both are drawn as ONE imshow of a tiled mosaic
    (1000 kernels of a 50x20 layer stay fast) with one shared colorbar.
    vmax defaults to max |w|; pass the same value for "initial" and "trained" to compare.
    """
    w = _np(weight).astype(np.float64)
    n_out, n_in, kh, kw = w.shape
    vmax = _limit(w, vmax)
    if n_in == 1:
        return _mosaic_figure(
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

    mosaic = np.full((n_out * (kh + 1) - 1, n_in * (kw + 1) - 1), np.nan)
    for o in range(n_out):
        for i in range(n_in):
            mosaic[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = w[o, i]
    px = min(0.3, 11.0 / n_out, 9.0 / n_in) / (kw + 1)  # inches per mosaic pixel
    img_w, img_h = mosaic.shape[1] * px, mosaic.shape[0] * px
    fig = Figure(figsize=(img_w + 2.2, img_h + 1.5))  # manual layout: fast for big layers
    ax = _inch_axes(fig, 0.7, 0.6, img_w, img_h)
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
    cax = _inch_axes(fig, 0.7 + img_w + 0.25, 0.6 + 0.2 * img_h, 0.16, 0.6 * img_h)
    _colorbar(fig, im, cax, WEIGHT_LABEL)
    return fig


def plot_mlp_templates(
    weight: Any, title: str, vmax: float | None = None, image_size: int = 28, max_units: int = 64
) -> Figure:
    """First Linear layer weight (hidden, image_size**2): each unit's row as an image template.

    Shows the first max_units units on a shared colour scale [-vmax, vmax] (default max |w|
    over the whole layer).
    """
    w = _np(weight).astype(np.float64)
    vmax = _limit(w, vmax)
    k = min(len(w), max_units)
    tiles = w[:k].reshape(k, image_size, image_size)
    if k < len(w):
        title = f"{title}\n(first {k} of {len(w)} hidden units)"
    return _mosaic_figure(
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
    w = _np(weight).astype(np.float64)
    rows = list(w.reshape(len(w), -1)) + [w.ravel()]
    return {
        "filter": [str(i) for i in range(len(w))] + ["all"],
        "min": [float(r.min()) for r in rows],
        "max": [float(r.max()) for r in rows],
        "mean": [float(r.mean()) for r in rows],
        "std": [float(r.std()) for r in rows],
    }


def plot_samples(images: Any, labels: Any, title: str, n: int = 64) -> Figure:
    """The first n images (N, H, W), uint8 0-255, each with its label above it."""
    imgs, top = _images(images)
    labels = _np(labels)[:n]
    return _mosaic_figure(
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
        y = _np(labels).astype(np.int64).ravel()
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


def plot_confusion_matrix(matrix: Any, title: str = "Confusion matrix") -> Figure:
    """(10, 10) counts, rows = true digit, columns = predicted digit, each cell annotated."""
    m = _np(matrix)
    fig = Figure(figsize=(7.5, 6.5))
    ax = _inch_axes(fig, 0.8, 0.7, 5.2, 5.2)
    im = ax.imshow(m, cmap="Blues", vmin=0)
    top = float(m.max()) if m.size else 0.0
    for t in range(m.shape[0]):
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
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(
        f"{title}\nrow = true digit, column = prediction; off-diagonal = mistakes", fontsize=12
    )
    cax = _inch_axes(fig, 6.25, 1.2, 0.18, 4.2)
    _colorbar(fig, im, cax, "number of images")
    return fig


def plot_per_class_accuracy(accuracy: Any, title: str = "Accuracy per digit") -> Figure:
    """Bar chart of 10 accuracies in 0..1, value on each bar, dashed line at their mean."""
    acc = _np(accuracy).astype(np.float64).ravel()
    mean = float(acc.mean())
    low = max(0.0, min(0.9, float(acc.min()) - 0.02))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(acc)), acc, color="tab:blue")
    ax.bar_label(
        bars,
        labels=[f"{a:.1%}" for a in acc],
        fontsize=9,
        padding=2,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
    )
    ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean of digits {mean:.1%}")
    ax.set_ylim(low, 1.0 + 0.08 * (1.0 - low))
    ax.set_xticks(range(len(acc)))
    ax.set_xlabel("digit")
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
) -> Figure:
    """The first n of the given wrong images (N, H, W), captioned "true t → pred p (c%)".

    confidence: the model's probability (0..1) for its (wrong) prediction.
    """
    imgs, top = _images(images)
    t, p, c = _np(true_labels)[:n], _np(predicted)[:n], _np(confidence)[:n]
    captions = [
        f"true {int(a)} → pred {int(b)} ({_pct(q)})" for a, b, q in zip(t, p, c, strict=False)
    ]
    return _mosaic_figure(
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


def plot_probability_bars(
    images: Any,
    probabilities: Any,
    labels: Any,
    title: str = "What the model believes",
    n: int = 6,
) -> Figure:
    """For each of n images (N, H, W): the image and a bar chart of its 10 probabilities (N, 10).

    The true label's bar is green; a wrong prediction's bar is red; other bars are grey.
    """
    imgs, top = _images(images)
    probs, labels = _np(probabilities)[:n].astype(np.float64), _np(labels)[:n]
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
        y, pred = int(y), int(prob.argmax())
        colours = ["0.7"] * len(prob)
        if pred != y:
            colours[pred] = "tab:red"
        colours[y] = "tab:green"
        img_ax, bar_ax = axes[row]
        img_ax.imshow(img, cmap="gray", vmin=0, vmax=top)
        img_ax.set_axis_off()
        bar_ax.bar(range(len(prob)), prob, color=colours)
        bar_ax.set_ylim(0, 1.05)
        bar_ax.set_yticks([0, 0.5, 1])
        bar_ax.set_xticks(range(len(prob)))
        bar_ax.set_ylabel("probability", fontsize=9)
        verdict = "correct" if pred == y else "WRONG"
        bar_ax.set_title(
            f"true {y}, predicted {pred} ({_pct(prob[pred])}) - {verdict}",
            fontsize=10,
            loc="left",
            color="black" if pred == y else "darkred",
        )
        bar_ax.grid(axis="y", alpha=0.3)
    axes[-1][1].set_xlabel("digit")
    fig.legend(
        handles=[
            Patch(color="tab:green", label="true label"),
            Patch(color="tab:red", label="wrong prediction"),
            Patch(color="0.7", label="other digits"),
        ],
        loc="lower center",
        ncols=3,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title, fontsize=13, y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig
