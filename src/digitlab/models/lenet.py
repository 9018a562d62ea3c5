"""LeNet family: conv > activation > maxpool blocks, then fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from digitlab.config.targets import buildable
from digitlab.errors import DigitlabError
from digitlab.models.activations import activation as make_activation
from digitlab.models.activations import dense


@buildable("network")
class LeNet(nn.Module):
    """(N, 1, S, S) images -> (N, num_classes) logits.

    Each entry of ``channels`` is a block conv(kernel_size, no padding) > activation > maxpool 2;
    each entry of ``hidden`` a fully connected layer with the same activation. The defaults are
    the MXNet tutorial's LeNet; 6/16 channels with 120/84 hidden units on 32x32 is LeNet-5.

    >>> LeNet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        channels: Sequence[int] = (20, 50),
        hidden: Sequence[int] = (500,),
        activation: str = "tanh",
        kernel_size: int = 5,
        input_size: int = 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        features: list[nn.Module] = []
        in_channels, side = 1, input_size
        for out_channels in channels:
            features += [
                nn.Conv2d(in_channels, out_channels, kernel_size),
                make_activation(activation),
                nn.MaxPool2d(2),
            ]
            in_channels, side = out_channels, (side - kernel_size + 1) // 2
        if side < 1:
            raise DigitlabError(
                f"model.channels={list(channels)} with kernel_size={kernel_size} shrinks a "
                f"{input_size}x{input_size} image to nothing: use fewer conv blocks or a larger "
                "input"
            )
        self.features = nn.Sequential(*features)
        self.classifier = dense(in_channels * side * side, hidden, activation, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
