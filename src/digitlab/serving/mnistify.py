"""A drawing made MNIST-like, as MNIST itself was made (LeCun et al.): the ink's bounding box
scaled into 20x20 with anti-aliasing, then placed in 28x28 with its centre of mass at the centre."""

from __future__ import annotations

import numpy as np

from digitlab.serving.model import BadInput

BOX, SIDE = 20, 28


def mnistify(ink: np.ndarray, threshold: int = 10) -> np.ndarray:
    """uint8 (28, 28) from a grayscale drawing (H, W), 0 = paper, 255 = ink, any size.

    Pixels at or below ``threshold`` count as paper when finding the bounding box (a canvas
    leaves faint anti-aliasing traces). Raises :class:`BadInput` for an empty drawing.
    """
    from PIL import Image

    ink = np.asarray(ink, dtype=np.float32)
    rows, cols = np.nonzero(ink > threshold)
    if len(rows) == 0:
        raise BadInput("the drawing is empty: draw a digit first")
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)  # the longer side becomes 20 px, the aspect ratio stays
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    small = np.asarray(image, dtype=np.float32)
    canvas = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return shift_to_centre_of_mass(canvas)


def shift_to_centre_of_mass(image: np.ndarray) -> np.ndarray:
    """uint8 image translated (by a fraction of a pixel too, bilinearly) so that its centre of
    mass is at pixel (14, 14), where MNIST's are (mean 13.99, 14.00 over its test digits)."""
    from PIL import Image

    total = image.sum()
    ys, xs = np.indices(image.shape)
    dy = image.shape[0] / 2 - (ys * image).sum() / total
    dx = image.shape[1] / 2 - (xs * image).sum() / total
    # An affine map from output to input pixels: out(x, y) = in(x - dx, y - dy); the 20x20 box
    # leaves 4 px margins, so the ink stays inside.
    moved = Image.fromarray(image.astype(np.float32), "F").transform(
        image.shape[::-1], Image.AFFINE, (1, 0, -dx, 0, 1, -dy), resample=Image.BILINEAR
    )
    return np.clip(np.rint(np.asarray(moved)), 0, 255).astype(np.uint8)


def decode_png(data_url: str, max_side: int = 2000) -> np.ndarray:
    """Grayscale ink (H, W), 0 = paper, from a canvas's ``data:image/png;base64,...``: white ink
    on black (the page's), dark ink on white, or any ink on a transparent canvas (its alpha)."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

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
    """Grayscale ink (H, W), 0 = paper, of a PIL image: white ink on black, dark ink on white
    (paper is the bulk of a drawing: a light one is inverted), or any ink on a transparent
    background (its alpha)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA") if image.mode in ("P", "PA") else image
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:  # a transparent canvas: what was drawn is where the alpha is
            return alpha
    gray = np.asarray(image.convert("L"))
    return 255 - gray if gray.mean() > 127 else gray  # paper is the bulk: ink on white inverted


# What digitlab-predict reads as pictures of digits (PIL reads them; any size).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_digit(path, max_side: int = 8000) -> np.ndarray:
    """uint8 (28, 28) MNIST-like digit from a picture file (PNG, JPEG, ...): its ink found as
    the draw page finds it (:func:`ink_of`), boxed and centred as MNIST's (:func:`mnistify`).
    Raises :class:`BadInput` in one line naming the file."""
    from PIL import Image, UnidentifiedImageError

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
