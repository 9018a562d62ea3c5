"""ConvNet: VGG-style blocks of small convolutions with batch norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.config.targets import buildable
from digitlab.errors import DigitlabError
from digitlab.models.activations import activation as make_activation


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that also trains on a batch of one sample, normalising it by the
    running averages as in eval mode: one sample has no batch statistics (torch raises), and an
    epoch's last batch holds one when the training rows leave one over a multiple of the batch
    size (e.g. ``data.val_size=4999`` with batch 100). Same weights and buffers as its parent."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        return super().forward(x)


@buildable("network")
class ConvNet(nn.Module):
    """(N, 1, S, S) images -> (N, num_classes) logits.

    Each entry of ``channels`` is a block of ``convs_per_block`` 3x3 convolutions (padded, so only
    the pooling shrinks the image), each followed by batch norm and the activation, then a 2x2
    max pool and dropout. Each entry of ``hidden`` is a fully connected layer > batch norm >
    activation > dropout. Two 3x3 convolutions see as far as one 5x5 with fewer weights and one
    more non-linearity; batch norm keeps the deeper stack trainable at a high learning rate (the
    layout of the small CNNs common on Kaggle's digit recognizer). What it measured in
    ``experiment=best``'s recipe is in experiments/PRESETS.md.

    >>> ConvNet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32),
        convs_per_block: int = 2,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.25,
        input_size: int = 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()  # dropout and convs_per_block: the schema's ConvNetArguments check them
        features: list[nn.Module] = []
        in_channels, side = 1, input_size
        for out_channels in channels:
            for _ in range(convs_per_block):
                # No conv bias: batch norm's shift takes its place.
                features += [
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    make_activation(activation),
                ]
                in_channels = out_channels
            features += [nn.MaxPool2d(2), nn.Dropout(dropout)]
            side //= 2
        if side < 1:
            raise DigitlabError(
                f"model.channels={list(channels)} halves a {input_size}x{input_size} image "
                f"{len(channels)} times, to nothing: use fewer conv blocks or a larger input"
            )
        self.features = nn.Sequential(*features)
        classifier: list[nn.Module] = [nn.Flatten()]
        width = in_channels * side * side
        for units in hidden:
            classifier += [
                nn.Linear(width, units, bias=False),
                BatchNorm1d(units),
                make_activation(activation),
                nn.Dropout(dropout),
            ]
            width = units
        classifier.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
