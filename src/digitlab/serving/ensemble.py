"""A committee of trained networks: each member sees the images through its own run's
preprocessing, and their class probabilities are averaged or their digits put to a vote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitlab.serving.model import probabilities

METHODS = ("mean", "vote")


@dataclass
class Member:
    """One network of an ensemble: ``name`` is its run id (or checkpoint path, for a member given
    as a file); ``config`` its run config, whose ``data`` and ``model.input_size`` say how it
    wants its images."""

    name: str
    run_id: str | None
    net: Any
    config: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """What sets this member apart: its network and its preprocessing."""
        data, model = self.config["data"], self.config["model"]
        return {
            "member": self.name,
            "model": str(model.get("_target_", "?")).rsplit(".", 1)[-1],
            "input_size": model.get("input_size", 28),
            "scale": data.get("scale"),
            "mean": data.get("mean"),
            "std": data.get("std"),
        }


def member_probabilities(members: Sequence[Member], images, tta: bool = False) -> np.ndarray:
    """float32 (M, N, 10): each member's class probabilities of uint8 images (N, 28, 28), each
    with its own normalisation and input size (28, or 32 for LeNet-5)."""
    return np.stack([probabilities(m.net, images, m.config, tta=tta).numpy() for m in members])


def combine(member_probs: np.ndarray, method: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """The committee's ``(probabilities (N, C), digits (N,))`` from members' (M, N, C).

    ``mean``: the mean of the members' probabilities, and its most probable digit.
    ``vote``: each class's share of the members' votes (each member votes for its most probable
    digit); the digit with most votes wins, a tie going to the tied digit of highest mean
    probability.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    mean = member_probs.mean(axis=0, dtype=np.float64)
    if method == "mean":
        return mean.astype(np.float32), mean.argmax(axis=1)
    members, rows, classes = member_probs.shape
    votes = np.zeros((rows, classes), dtype=np.int64)
    for ballot in member_probs.argmax(axis=2):  # one member's digits (N,)
        votes[np.arange(rows), ballot] += 1
    tied = votes == votes.max(axis=1, keepdims=True)
    digits = np.where(tied, mean, -np.inf).argmax(axis=1)
    return (votes / members).astype(np.float32), digits


def accuracy(digits: np.ndarray, labels) -> float | None:
    """Share of ``digits`` equal to ``labels`` (None when the images have no labels)."""
    if labels is None or not len(labels):
        return None
    return float((np.asarray(digits) == np.asarray(labels)).mean())
