"""Tests for digitlab.figures.plots: each plot returns a titled Figure that renders; exact stats."""

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from digitlab.figures.plots.data import plot_label_histogram, plot_samples
from digitlab.figures.plots.filters import filter_stats, plot_filters, plot_mlp_templates
from digitlab.figures.plots.predictions import (
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_probability_bars,
)


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def title_of(fig: Figure) -> str:
    """The figure's suptitle, else the first axes title (centre or left)."""
    if fig.get_suptitle():
        return fig.get_suptitle()
    for ax in fig.axes:
        for loc in ("center", "left"):
            if ax.get_title(loc=loc):
                return ax.get_title(loc=loc)
    return ""


def renders(fig: Figure) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def digits():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=20)
    return images, labels


def test_plot_filters_single_input_channel_is_one_mosaic_with_shared_colorbar():
    w = torch.nn.Conv2d(1, 20, 5).weight
    fig = plot_filters(w, "conv1 at init")
    assert isinstance(fig, Figure)
    assert title_of(fig) == "conv1 at init"
    assert len(image_axes(fig)) == 1
    assert len(fig.axes) == 2  # the mosaic plus ONE colorbar
    captions = [t.get_text() for t in image_axes(fig)[0].texts]
    assert captions == [f"filter {i}" for i in range(20)]
    assert renders(fig)


def test_plot_filters_default_vmax_is_max_abs_and_symmetric():
    w = torch.tensor([[[[0.1, -0.3], [0.2, 0.05]]], [[[0.0, 0.25], [-0.1, 0.15]]]])
    fig = plot_filters(w, "t")
    assert image_axes(fig)[0].images[0].get_clim() == pytest.approx((-0.3, 0.3))


def test_plot_filters_explicit_vmax_is_used():
    w = np.full((3, 1, 5, 5), 0.01)
    fig = plot_filters(w, "t", vmax=0.5)
    assert image_axes(fig)[0].images[0].get_clim() == pytest.approx((-0.5, 0.5))


def test_plot_filters_multi_channel_is_labelled_grid():
    w = torch.nn.Conv2d(20, 50, 5).weight
    fig = plot_filters(w, "conv2 at init")
    (ax,) = image_axes(fig)
    assert ax.get_xlabel() == "input channel"
    assert ax.get_ylabel() == "output filter"
    assert "conv2 at init" in title_of(fig)
    # 50 rows x 20 columns of 5x5 kernels with 1-pixel gaps
    assert ax.images[0].get_array().shape == (50 * 6 - 1, 20 * 6 - 1)
    vmax = float(w.detach().abs().max())
    assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
    assert len(fig.axes) == 2
    assert renders(fig)


def test_plot_mlp_templates_shows_at_most_max_units():
    w = torch.nn.Linear(784, 128).weight
    fig = plot_mlp_templates(w, "mlp at init", max_units=16)
    (ax,) = image_axes(fig)
    assert [t.get_text() for t in ax.texts] == [f"unit {i}" for i in range(16)]
    assert "first 16 of 128" in title_of(fig)
    vmax = float(w.detach().abs().max())
    assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
    assert renders(fig)


def test_filter_stats_match_numpy():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) - 5.0
    w[1, 0, 0, 0] = 100.0
    stats = filter_stats(w)
    arr = w.numpy().reshape(2, -1)
    assert stats["filter"] == ["0", "1", "all"]
    assert stats["min"] == pytest.approx([arr[0].min(), arr[1].min(), arr.min()])
    assert stats["max"] == pytest.approx([arr[0].max(), arr[1].max(), arr.max()])
    assert stats["mean"] == pytest.approx([arr[0].mean(), arr[1].mean(), arr.mean()])
    assert stats["std"] == pytest.approx([arr[0].std(), arr[1].std(), arr.std()])
    assert all(type(v) is float for col in ("min", "max", "mean", "std") for v in stats[col])
    assert {len(col) for col in stats.values()} == {3}


def test_plot_samples_labels_each_digit(digits):
    images, labels = digits
    fig = plot_samples(torch.from_numpy(images), torch.from_numpy(labels), "samples", n=12)
    (ax,) = image_axes(fig)
    assert [t.get_text() for t in ax.texts] == [str(y) for y in labels[:12]]
    assert title_of(fig) == "samples"
    assert renders(fig)


def test_plot_label_histogram_has_one_bar_group_per_split(digits):
    _, labels = digits
    fig = plot_label_histogram({"train": labels, "test": torch.from_numpy(labels[:5])})
    (ax,) = fig.axes
    assert len(ax.patches) == 20
    assert ax.get_xlabel() == "class" and ax.get_ylabel() == "count"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (n=20)", "test (n=5)"]
    heights = [p.get_height() for p in ax.patches[:10]]
    assert heights == list(np.bincount(labels, minlength=10))
    assert title_of(fig)
    assert renders(fig)


def test_plot_confusion_matrix_annotates_every_cell():
    m = np.arange(100).reshape(10, 10)
    fig = plot_confusion_matrix(torch.from_numpy(m))
    (ax,) = image_axes(fig)
    assert len(ax.texts) == 100 and ax.texts[23].get_text() == "23"
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert title_of(fig)
    assert renders(fig)


def test_plot_per_class_accuracy_zooms_and_labels_bars():
    acc = np.linspace(0.95, 0.99, 10)
    fig = plot_per_class_accuracy(acc)
    (ax,) = fig.axes
    assert len(ax.patches) == 10
    assert ax.get_ylim()[0] == pytest.approx(0.9)
    assert ax.get_ylim()[1] >= 1.0
    assert title_of(fig)
    assert renders(fig)


def test_plot_confident_mistakes_captions(digits):
    images, labels = digits
    pred = (labels + 1) % 10
    conf = np.full(20, 0.97)
    fig = plot_confident_mistakes(images, labels, pred, conf, n=4)
    (ax,) = image_axes(fig)
    assert ax.texts[0].get_text() == f"true {labels[0]} → pred {pred[0]} (97%)"
    assert len(ax.texts) == 4
    assert title_of(fig)
    assert renders(fig)


def test_plot_confident_mistakes_with_no_mistakes_still_renders():
    fig = plot_confident_mistakes(np.zeros((0, 28, 28), np.uint8), [], [], [])
    assert renders(fig)


def test_plot_probability_bars_highlights_true_and_predicted(digits):
    images, labels = digits
    probs = torch.softmax(torch.randn(20, 10), dim=1)
    fig = plot_probability_bars(images, probs, labels, n=3)
    assert len(image_axes(fig)) == 3
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert len(bar_axes) == 3
    for ax, p, y in zip(bar_axes, probs[:3], labels[:3], strict=True):
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]
        colours = [tuple(bar.get_facecolor()) for bar in ax.patches]
        pred = int(p.argmax())
        others = [c for d, c in enumerate(colours) if d not in (y, pred)]
        assert colours[y] not in others
        if pred != y:
            assert colours[pred] not in others and colours[pred] != colours[y]
    assert title_of(fig)
    assert renders(fig)
