"""A drawing made MNIST-like, as MNIST itself was made (LeCun et al.): the ink's bounding box
scaled into 20x20 with anti-aliasing, then placed in 28x28 with its centre of mass at the centre;
and the ink of a picture (a canvas, a scan, a photo of a page) found first (:func:`find_ink`)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from digitlab.serving.model import BadInput

BOX, SIDE = 20, 28


def mnistify(ink: np.ndarray, threshold: int = 10) -> np.ndarray:
    """uint8 (28, 28) from a grayscale drawing (H, W), 0 = paper, 255 = ink, any size.

    Pixels at or below ``threshold`` count as paper when finding the bounding box (a canvas
    leaves faint anti-aliasing traces). Raises :class:`BadInput` for an empty drawing.
    """
    ink = np.asarray(ink, dtype=np.float32)
    rows, cols = np.nonzero(ink > threshold)
    if len(rows) == 0:
        raise BadInput("the drawing is empty: draw a digit first")
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)  # the longer side becomes 20 px, the aspect ratio stays
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS
    )
    small = np.asarray(image, dtype=np.float32)
    canvas = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return shift_to_centre_of_mass(canvas)


def shift_to_centre_of_mass(image: np.ndarray) -> np.ndarray:
    """uint8 image translated (by a fraction of a pixel too, bilinearly) so that its centre of
    mass is at pixel (14, 14), where MNIST's are (mean 13.99, 14.00 over its test digits)."""
    total = image.sum()
    ys, xs = np.indices(image.shape)
    dy = image.shape[0] / 2 - (ys * image).sum() / total
    dx = image.shape[1] / 2 - (xs * image).sum() / total
    # An affine map from output to input pixels: out(x, y) = in(x - dx, y - dy); the 20x20 box
    # leaves 4 px margins, so the ink stays inside.
    moved = Image.fromarray(image.astype(np.float32), "F").transform(
        image.shape[::-1],
        Image.Transform.AFFINE,
        (1, 0, -dx, 0, 1, -dy),
        resample=Image.Resampling.BILINEAR,
    )
    return np.clip(np.rint(np.asarray(moved)), 0, 255).astype(np.uint8)


def decode_png(data_url: str, max_side: int = 2000) -> np.ndarray:
    """Grayscale ink (H, W), 0 = paper, from a canvas's ``data:image/png;base64,...``: white ink
    on black (the page's), dark ink on white, or any ink on a transparent canvas (its alpha)."""
    head, _, body = str(data_url).partition(",")
    if not head.startswith("data:image/png;base64"):
        raise BadInput("the drawing must be a PNG data URL (canvas.toDataURL('image/png'))")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(body, validate=True)))
        if max(image.size) > max_side:
            raise BadInput(
                f"the drawing is {image.size[0]}x{image.size[1]} px: at most {max_side} a side"
            )
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput(
            "the drawing is not a readable PNG: send canvas.toDataURL('image/png')"
        ) from None
    return ink_of(image)


def ink_of(image) -> np.ndarray:
    """uint8 ink (H, W) of a PIL image, 0 = paper, 255 = full ink, holding only the digit.

    A transparent canvas's ink is its alpha. Anything else is a picture of a digit on paper
    (a canvas, a scan or a photo, the digit anywhere on it): :func:`find_ink`.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA") if image.mode in ("P", "PA") else image
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:  # a transparent canvas: what was drawn is where the alpha is
            return alpha
    return find_ink(np.asarray(image.convert("L")))


# The paper's shading is fitted as a polynomial surface of this degree in x and y: gradients,
# vignettes and the fall-off of a lamp or flash are smooth at the scale of a page.
SHADING_DEGREE = 3
# A pixel counts towards the digit when it is this many noise deviations darker than the paper
# (seeds), and its strokes end where the ink falls to LOW_SIGMAS: no sensor noise reaches 6.
SEED_SIGMAS, LOW_SIGMAS = 6.0, 4.0
MIN_CONTRAST = 10.0  # grey levels: less is no ink, even on a noiseless canvas (anti-aliasing)


def find_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 ink (H, W), 0 = paper, 255 = full ink, of a grayscale picture (0 = black), as
    document tools find it: the paper's shading fitted and taken away (light paper or dark,
    the digit is what stands out of it), a threshold from the flattened image's own histogram
    (Otsu's) around the strongest mark, the digit's connected strokes followed down to the noise
    (hysteresis), everything else set to paper. Ink is scaled so that its strokes reach 255, as
    MNIST's do. All paper (one shade, or noise only): all zeros."""
    gray = np.asarray(gray, dtype=np.float32)
    height, width = gray.shape
    # Where to look: a reduced copy (at most 512 px a side; averaging also quiets the noise).
    sy, sx = steps(gray.shape, 512)
    small = reduce(gray, sy, sx)
    shading = Shading.fit(small, (sy, sx), gray.shape)
    residual = small - shading.at(0, small.shape[0] * sy, 0, small.shape[1] * sx, sy, sx)
    sign = ink_sign(residual)
    ink = sign * residual
    paper, noise = median_and_spread(ink)
    seeds = ink > paper + max(SEED_SIGMAS * noise, MIN_CONTRAST)
    if not seeds.any():
        return np.zeros(gray.shape, np.uint8)
    labels, count = ndimage.label(seeds, np.ones((3, 3)))
    mass = ndimage.sum_labels(ink - paper, labels, range(1, count + 1))
    (rows, cols) = ndimage.find_objects(labels)[int(np.argmax(mass))]
    # The strongest mark, widened by half its size each way: the rest of its digit (a 5's bar,
    # a 4's stem) lies within, and enough paper for the histogram to have two sides.
    margin = max(rows.stop - rows.start, cols.stop - cols.start) // 2 + 2
    top, bottom = max(0, (rows.start - margin) * sy), min(height, (rows.stop + margin) * sy)
    left, right = max(0, (cols.start - margin) * sx), min(width, (cols.stop + margin) * sx)
    region = sign * (gray[top:bottom, left:right] - shading.at(top, bottom, left, right, 1, 1))
    smooth = ndimage.gaussian_filter(region, 1.0) if max(height, width) > 256 else region
    paper, noise = median_and_spread(smooth)
    high = smooth > max(otsu(smooth), paper + max(SEED_SIGMAS * noise, MIN_CONTRAST))
    labels, count = ndimage.label(high, np.ones((3, 3)))
    if count == 0:
        return np.zeros(gray.shape, np.uint8)
    areas = ndimage.sum_labels(high, labels, range(1, count + 1))
    # The digit's strokes: every mark of some size, not the specks of noise or paper grain.
    strokes = np.isin(labels, 1 + np.flatnonzero(areas >= 0.02 * areas.max()))
    low = smooth > min(paper + max(LOW_SIGMAS * noise, MIN_CONTRAST), smooth[strokes].min())
    low_labels, _ = ndimage.label(low, np.ones((3, 3)))
    digit = np.isin(low_labels, np.unique(low_labels[strokes]))
    full = np.percentile(smooth[strokes], 90)  # a stroke's core: MNIST's 255
    out = np.zeros(gray.shape, np.uint8)
    scaled = np.clip((region - paper) * (255 / max(full - paper, 1e-6)), 0, 255)
    out[top:bottom, left:right] = np.where(digit, np.rint(scaled), 0).astype(np.uint8)
    return out


def steps(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """The block (rows, columns) that reduces an image of ``shape`` to at most ``side`` pixels
    a side: square, but never more than the image's own side."""
    step = max(1, -(-max(shape) // side))
    return min(step, shape[0]), min(step, shape[1])


def reduce(image: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """float32 ``image`` averaged over blocks of ``sy`` x ``sx`` pixels (PIL's box reduction;
    a last partial block averages the pixels it has)."""
    if sy == sx == 1:
        return image
    flat = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), "F")
    return np.asarray(flat.reduce((sx, sy)))


def median_and_spread(values: np.ndarray) -> tuple[float, float]:
    """The median of ``values`` and their standard deviation estimated robustly (1.4826 times
    the median absolute deviation): the paper's level and its noise, whatever the ink does."""
    sample = values.ravel()[:: max(1, values.size // 100_000)]
    median = float(np.median(sample))
    return median, 1.4826 * float(np.median(np.abs(sample - median)))


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values``: the cut of their 256-bin histogram that maximises the
    variance between the two sides."""
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    return float(centres[int(np.nanargmax(between[:-1]))]) if total else 0.0


class Shading:
    """The paper's shade over the page, a polynomial surface fitted to a reduced copy, robustly
    (the ink, whatever its colour, is left out of the fit as what stands out of it)."""

    def __init__(self, coefficients: np.ndarray, shape: tuple[int, int]) -> None:
        self.coefficients, self.shape = coefficients, shape

    @staticmethod
    def powers(n: int, start: int, step: int, side: int) -> np.ndarray:
        """(n, degree + 1) powers of the centres of ``n`` blocks of ``step`` pixels from pixel
        ``start`` on, in coordinates -1..1 across a side of ``side`` pixels."""
        centres = start + (np.arange(n) + 0.5) * step
        return np.vander(2 * centres / side - 1, SHADING_DEGREE + 1, increasing=True)

    @classmethod
    def fit(cls, small: np.ndarray, step: tuple[int, int], shape: tuple[int, int]) -> Shading:
        """The shading of a picture of ``shape`` from ``small``, its copy reduced by blocks of
        ``step`` (rows, columns)."""
        fy, fx = steps(small.shape, 64)  # 64 points a side are plenty for a cubic
        points = reduce(small, fy, fx)
        ys = cls.powers(points.shape[0], 0, step[0] * fy, shape[0])
        xs = cls.powers(points.shape[1], 0, step[1] * fx, shape[1])
        design = np.einsum("yi,xj->yxij", ys, xs).reshape(points.size, -1)
        values = points.ravel().astype(np.float64)
        # Start from the paper's median shade (the paper is the bulk of a picture: the ink,
        # however much of it, stays out), then fit the surface to what stays near it.
        paper, spread = median_and_spread(values)
        keep = np.abs(values - paper) <= 3 * spread + 0.5
        for _ in range(4):
            kept = design[keep]  # least squares by the normal equations: 16 unknowns
            coefficients = np.linalg.lstsq(kept.T @ kept, kept.T @ values[keep], rcond=None)[0]
            residual = values - design @ coefficients
            _, spread = median_and_spread(residual[keep])
            keep = np.abs(residual) <= 3 * spread + 0.5
        size = SHADING_DEGREE + 1
        return cls(coefficients.reshape(size, size), shape)

    def at(self, top: int, bottom: int, left: int, right: int, sy: int, sx: int) -> np.ndarray:
        """The paper's shade over rows top..bottom and columns left..right of the full picture,
        one value per block of ``sy`` x ``sx`` pixels."""
        ys = self.powers((bottom - top) // sy, top, sy, self.shape[0])
        xs = self.powers((right - left) // sx, left, sx, self.shape[1])
        return (ys @ self.coefficients @ xs.T).astype(np.float32)


def ink_sign(residual: np.ndarray) -> float:
    """-1 for dark ink on lighter paper, +1 for light ink on darker paper: the side on which the
    marks (what stands well out of the flattened paper's noise) weigh more; -1 when none do."""
    paper, noise = median_and_spread(residual)
    cut = max(SEED_SIGMAS * noise, MIN_CONTRAST)
    dark = (paper - residual)[residual < paper - cut].sum()
    light = (residual - paper)[residual > paper + cut].sum()
    return -1.0 if dark >= light else 1.0


# What digitlab-predict reads as pictures of digits (PIL reads them; any size).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_digit(path, max_side: int = 8000) -> np.ndarray:
    """uint8 (28, 28) MNIST-like digit from a picture file (PNG, JPEG, ...): its ink found on
    its paper as the draw page's is (:func:`ink_of`), boxed and centred as MNIST's
    (:func:`mnistify`).
    Raises :class:`BadInput` in one line naming the file."""
    try:
        with Image.open(path) as image:
            if max(image.size) > max_side:
                raise BadInput(
                    f"{path} is {image.size[0]}x{image.size[1]} px: at most "
                    f"{max_side} a side; scale it down"
                )
            image.load()
            ink = ink_of(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, BadInput):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a readable picture"
        raise BadInput(
            f"{path}: {reason}; give pictures of digits as PNG, JPEG, GIF, BMP, WebP or TIFF files"
        ) from None
    try:
        return mnistify(ink)
    except BadInput:
        raise BadInput(
            f"{path} holds no digit (one shade only): give a picture of a digit"
        ) from None
