"""A drawing made MNIST-like: bounding box into 20x20, centre of mass at the centre of 28x28."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from conftest import REAL_DATA
from digitlab.serving.mnistify import decode_png, mnistify
from digitlab.serving.model import BadInput


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def test_an_off_centre_drawing_is_boxed_into_20_px_and_centred():
    drawing = np.zeros((300, 200), np.uint8)
    ys, xs = np.indices(drawing.shape)
    drawing[((ys - 70) / 50) ** 2 + ((xs - 160) / 12) ** 2 <= 1] = 255  # a tall ellipse, top right
    image = mnistify(drawing)
    rows, cols = np.nonzero(image > 0)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert rows.max() - rows.min() + 1 in (20, 21)  # the long side, anti-aliased edges aside
    assert 4 <= cols.max() - cols.min() + 1 <= 7  # the aspect ratio kept (25/101 of 20)
    cy, cx = centre_of_mass(image.astype(float))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # where MNIST's sit
    assert len(np.unique(image)) > 2  # grey edges: anti-aliased, not binary


@pytest.mark.real_data
def test_real_mnist_digits_drawn_large_and_off_centre_come_back_as_they_were():
    """MNIST digits already are what the preprocessing makes: blown up 10x and moved to a
    corner of a big canvas, they come back close to the originals."""
    from PIL import Image

    from digitlab.data.idx import read_images

    images = read_images(REAL_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")[:20].numpy()
    correlations = []
    for original in images:
        big = np.asarray(Image.fromarray(original).resize((280, 280), Image.BILINEAR))
        canvas = np.zeros((500, 400), np.uint8)
        canvas[200:480, 10:290] = big
        again = mnistify(canvas).astype(float)
        correlation = np.corrcoef(again.ravel(), original.astype(float).ravel())[0, 1]
        correlations.append(correlation)
    assert min(correlations) > 0.8 and np.median(correlations) > 0.9, correlations


def test_empty_drawing_and_bad_png_are_one_line():
    with pytest.raises(BadInput, match="empty"):
        mnistify(np.zeros((50, 50)))
    with pytest.raises(BadInput, match="not a readable PNG"):
        decode_png("data:image/png;base64," + base64.b64encode(b"nope").decode())
    with pytest.raises(BadInput, match="PNG data URL"):
        decode_png("hello")


def test_canvas_png_alpha_is_the_ink():
    from PIL import Image

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 18:22] = (0, 0, 0, 255)  # black ink on a transparent canvas
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    ink = decode_png(url)
    assert ink.shape == (40, 40) and ink[20, 20] == 255 and ink[0, 0] == 0


@pytest.mark.parametrize(
    ("paper", "ink"),
    [((0, 0, 0, 255), (255, 255, 255, 255)), ((255, 255, 255, 255), (0, 0, 0, 255))],
)
def test_opaque_canvases_white_on_black_and_black_on_white(paper, ink):
    from PIL import Image

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:] = paper
    rgba[10:30, 18:22] = ink
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    decoded = decode_png("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    assert decoded[20, 20] == 255 and decoded[0, 0] == 0


def photographed(ink: np.ndarray, page: tuple[int, int], at: tuple[int, int], seed: int = 0):
    """``ink`` (0 = paper, 255 = ink) drawn dark on a photo-like page of ``page`` (h, w) pixels
    with its top left corner at ``at``: grey paper brighter on one side, darker in the corners
    (a vignette), sensor noise; as JPEG bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = page
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    paper = 205 + 40 * x - 15 * y - 120 * (x**2 + y**2)  # 160..235 over the page
    top, left = at
    box = paper[top : top + ink.shape[0], left : left + ink.shape[1]]
    box += (40 - box) * (ink.astype(np.float32) / 255)
    paper += rng.normal(0, 8, paper.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def seven(side: int) -> np.ndarray:
    """A 7 written with a pen of ``side`` / 10: ink 255 on paper 0, ``side`` x ``side``."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (side, side), 0)
    pen = max(2, side // 10)
    ImageDraw.Draw(image).line(
        [(side * 0.2, side * 0.15), (side * 0.8, side * 0.15), (side * 0.4, side * 0.9)],
        fill=255,
        width=pen,
    )
    return np.asarray(image)


@pytest.mark.parametrize(("side", "at"), [(120, (1400, 200)), (600, (300, 900))])
def test_a_digit_photographed_small_or_large_anywhere_on_a_big_uneven_page_is_found(side, at):
    """The paper of a photo is lighter than ink but far from white, and uneven: it is no ink.
    The digit's box is found where it was drawn, and made the MNIST digit its clean drawing
    makes."""
    from digitlab.serving.mnistify import ink_of, read_digit

    drawing = seven(side)
    page = photographed(drawing, (1800, 1600), at)
    from PIL import Image

    ink = ink_of(Image.open(io.BytesIO(page)))
    rows, cols = np.nonzero(ink)
    drawn_rows, drawn_cols = np.nonzero(drawing)
    margin = side // 20 + 2
    assert abs(rows.min() - (at[0] + drawn_rows.min())) <= margin
    assert abs(rows.max() - (at[0] + drawn_rows.max())) <= margin
    assert abs(cols.min() - (at[1] + drawn_cols.min())) <= margin
    assert abs(cols.max() - (at[1] + drawn_cols.max())) <= margin
    seen, clean = read_digit(io.BytesIO(page)).astype(float), mnistify(drawing).astype(float)
    assert np.corrcoef(seen.ravel(), clean.ravel())[0, 1] > 0.9
