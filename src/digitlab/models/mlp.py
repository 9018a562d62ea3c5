"""Multilayer perceptron over flattened images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from digitlab.config.targets import buildable
from digitlab.models.activations import dense


@buildable("network")
class MLP(nn.Module):
    """(N, 1, S, S) images -> (N, num_classes) logits through ``hidden`` fully connected layers.

    >>> MLP(hidden=[128, 64])(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        hidden: Sequence[int] = (128, 64),
        activation: str = "relu",
        input_size: int = 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.layers = dense(input_size * input_size, hidden, activation, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
