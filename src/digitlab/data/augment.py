"""Random affine augmentation of whole batches on their device (shift, rotation, scale)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomAffine:
    """Each image of a batch gets its own random rotation, scale and shift, in one grid_sample.

    torchvision's RandomAffine draws one transform per call, so a batch would move as a whole;
    this draws one per image and runs on the batch's device, keeping batches on the GPU.

    Args:
        degrees: rotation drawn uniformly from [-degrees, degrees].
        translate: shift drawn from [-translate, translate] as a fraction of the image side.
        scale: zoom factor drawn from [1 - scale, 1 + scale].
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, scale: float = 0.1) -> None:
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def __call__(
        self, x: torch.Tensor, fill: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(N, C, H, W) float -> the same shape, every image moved by its own transform.

        ``fill`` is the value of pixels moved in from outside the image, in model input units
        (the normalised black background).
        """
        n = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device=x.device, generator=generator) * (high - low) + low

        angle = uniform(-self.degrees, self.degrees) * (math.pi / 180)
        zoom = uniform(1 - self.scale, 1 + self.scale)
        # affine_grid maps output to input coordinates in [-1, 1]: a shift of t image sides is 2t.
        shift_x, shift_y = (uniform(-2 * self.translate, 2 * self.translate) for _ in range(2))
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # grid_sample pads with zeros: shift the fill value to 0 and back.
        moved = F.grid_sample(
            x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return moved + fill
