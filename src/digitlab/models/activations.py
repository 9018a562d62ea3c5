"""Activation functions by name, so configs hold strings rather than objects; the dense head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from digitlab.errors import DigitlabError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise DigitlabError(
            f"model.activation={name!r} is unknown: choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def dense(width: int, hidden: Sequence[int], activation_name: str, outputs: int) -> nn.Sequential:
    """Flatten, a Linear layer and the activation per entry of ``hidden``, then the logits."""
    layers: list[nn.Module] = [nn.Flatten()]
    for units in hidden:
        layers += [nn.Linear(width, units), activation(activation_name)]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, outputs))
