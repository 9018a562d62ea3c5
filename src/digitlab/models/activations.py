"""Activation functions by name, so configs hold strings rather than objects."""

from __future__ import annotations

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
