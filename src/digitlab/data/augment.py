"""Moving whole batches of images on their device: random training augmentation (rotation, scale,
shift, shear, elastic distortion) and the fixed moves of test-time augmentation, both through
:func:`move` (one ``grid_sample`` per batch)."""

from __future__ import annotations

import math
from typing import TypedDict

import torch
import torch.nn.functional as F

from digitlab.config.targets import buildable


def move(
    x: torch.Tensor,
    *,
    angle: torch.Tensor | float = 0.0,
    zoom: torch.Tensor | float = 1.0,
    shift_x: torch.Tensor | float = 0.0,
    shift_y: torch.Tensor | float = 0.0,
    shear: torch.Tensor | float = 0.0,
    displacement: torch.Tensor | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """(N, C, H, W) float -> the same shape, each image moved as its own arguments say.

    Each argument is a number (the same for every image) or a tensor of N (one per image):
    ``angle`` and ``shear`` in degrees (counter-clockwise as seen; shear slants columns
    sideways by ``tan(shear)`` per row), ``zoom`` as a factor (> 1 magnifies), ``shift_x`` and
    ``shift_y`` in pixels (right and down). ``displacement`` (N, 2, H, W), in pixels, moves each
    output pixel's sampling point further (x first): an elastic distortion. ``fill`` is the value
    of pixels moved in from outside the image, in model input units (the normalised background).
    """
    n, _, height, width = x.shape

    def per_image(value: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(n)

    # affine_grid maps output to input coordinates in [-1, 1] (y down): the inverse of the move.
    rad, slant = per_image(angle) * (math.pi / 180), torch.tan(per_image(shear) * (math.pi / 180))
    cos, sin, inv_zoom = torch.cos(rad), torch.sin(rad), 1 / per_image(zoom)
    # Output -> input: undo the zoom, the rotation (an image turned counter-clockwise by a reads
    # its input at the point turned by -a, which in y-down coordinates is [[c, -s], [s, c]]),
    # then the shear.
    a, b = cos * inv_zoom, -sin * inv_zoom
    c, d = sin * inv_zoom, cos * inv_zoom
    a, b = a - slant * c, b - slant * d
    tx, ty = -2 * per_image(shift_x) / width, -2 * per_image(shift_y) / height
    theta = torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    if displacement is not None:
        scale = torch.tensor([2 / width, 2 / height], dtype=x.dtype, device=x.device)
        grid = grid + displacement.permute(0, 2, 3, 1) * scale
    # grid_sample pads with zeros: shift the fill value to 0 and back.
    moved = F.grid_sample(
        x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved + fill


@buildable("augmentation")
class RandomAffine:
    """Each image of a batch gets its own random rotation, scale, shift, shear and (optionally)
    elastic distortion, in one grid_sample on the batch's device.

    torchvision's RandomAffine and ElasticTransform draw one transform per call, so a batch would
    move as a whole; this draws one per image and keeps batches on the GPU.

    Args:
        degrees: rotation drawn uniformly from [-degrees, degrees].
        translate: shift drawn from [-translate, translate] as a fraction of the image side.
        scale: zoom factor drawn from [1 - scale, 1 + scale].
        shear: shear angle drawn from [-shear, shear] degrees.
        elastic: elastic distortion's strength in pixels (Simard et al. 2003's alpha divided by
            the smoothed field's size, so it reads as how far a pixel moves); 0 turns it off.
        elastic_sigma: the distortion field's smoothness, a Gaussian's sigma in pixels.
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: float = 0.1,
        shear: float = 0.0,
        elastic: float = 0.0,
        elastic_sigma: float = 4.0,
    ) -> None:
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear
        self.elastic, self.elastic_sigma = elastic, elastic_sigma

    def __call__(
        self, x: torch.Tensor, fill: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(N, C, H, W) float -> the same shape, every image moved by its own transform."""
        n, _, height, width = x.shape

        def uniform(spread: float, *shape: int) -> torch.Tensor:
            draw = torch.rand(n, *shape, device=x.device, generator=generator)
            return (draw * 2 - 1) * spread

        displacement = None
        if self.elastic > 0:
            field = smooth(uniform(1.0, 2, height, width), self.elastic_sigma)
            # Scaled so the field's typical (RMS) displacement is `elastic` pixels.
            rms = field.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8)
            displacement = field / rms * self.elastic
        return move(
            x,
            angle=uniform(self.degrees),
            zoom=1 + uniform(self.scale),
            shift_x=uniform(self.translate * width),
            shift_y=uniform(self.translate * height),
            shear=uniform(self.shear),
            displacement=displacement,
            fill=fill,
        )


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel of (N, C, H, W) with a Gaussian of ``sigma`` pixels (two 1-D passes)."""
    radius = max(1, math.ceil(3 * sigma))
    steps = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    kernel = torch.exp(-(steps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = field.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(field, rows, padding=(0, radius), groups=channels)
    return F.conv2d(blurred, rows.transpose(2, 3), padding=(radius, 0), groups=channels)


class Move(TypedDict, total=False):
    """A fixed move of :func:`move`: its keyword arguments, as plain numbers."""

    angle: float
    zoom: float
    shift_x: float
    shift_y: float
    shear: float


# Test-time augmentation's fixed moves (predict's ``--tta``): the image as it is, shifted one
# pixel each way and turned 8 degrees each way; a network's probabilities over them are averaged.
TTA_MOVES: tuple[Move, ...] = (
    {},
    {"shift_x": 1},
    {"shift_x": -1},
    {"shift_y": 1},
    {"shift_y": -1},
    {"angle": 8},
    {"angle": -8},
)


def averaged_probabilities(
    net: torch.nn.Module, x: torch.Tensor, moves: tuple[Move, ...], fill: float
) -> torch.Tensor:
    """(N, C) class probabilities of ``net`` for the batch ``x`` (model input units), averaged
    over ``moves`` (keyword arguments of :func:`move`; ``{}`` is the batch as it is)."""
    each = [net(move(x, **m, fill=fill) if m else x).softmax(dim=1) for m in moves]
    return torch.stack(each).mean(dim=0)
