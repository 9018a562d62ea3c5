"""The code of digitlab's MLflow Model: raw pixels in, class probabilities and the digit out.

A run logs its best network as a ``python_function`` model whose ``loader_module`` is this file
and whose data is a weights-only checkpoint read by ``network_from_checkpoint`` (no pickled
objects, the ``_target_`` allow-list): not ``mlflow.pytorch``'s flavour, which pickles the whole
``nn.Module``. ``digitlab-predict --help`` imports this module (:data:`UNSURE_BELOW`), so torch,
Lightning and the checkpoint reader (12 s in all) are imported where used, marked lazy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.config.classes import run_classes
from digitlab.errors import DigitlabError

SIDE = 28
# A prediction whose class has a probability below this is marked unsure: a digit the network
# has not seen the like of (a scribble, a letter, a page where no digit was found) spreads its
# probability, and a network trained on MNIST is surer than this of nearly all its right answers.
UNSURE_BELOW = 0.8
# More rows than one request should need; a bigger batch is a client's mistake, not a workload.
MAX_ROWS = 10_000


class BadInput(DigitlabError, ValueError):
    """A request whose pixels cannot be classified; the message names the problem and the fix."""


def as_pixels(data: Any, max_rows: int = MAX_ROWS) -> np.ndarray:
    """uint8 (N, 28, 28) MNIST-like pixels from images shaped (N, 28, 28) or (N, 784): light ink
    on a dark ground, 0..255. Raises :class:`BadInput` in one line for any other shape, dtype or
    value.

    Two other ways of writing a digit are recognised, image by image, and turned into MNIST's
    (:func:`mnist_like`): values in 0..1 (a scaled image) and dark ink on light paper.
    """
    if isinstance(data, dict) and len(data) == 1:  # a single named input, as MLflow may pass
        data = next(iter(data.values()))
    if hasattr(data, "to_numpy"):  # a pandas DataFrame of 784 columns
        data = data.to_numpy()
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise BadInput(
            "the pixels are ragged lists: every image needs 28x28 (or 784) numbers"
        ) from None
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise BadInput(
            f"pixels of type {array.dtype} are not numbers: send integers or floats 0..255"
        )
    if array.ndim == 2 and array.shape[1] == SIDE * SIDE:
        array = array.reshape(-1, SIDE, SIDE)
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE):
        raise BadInput(f"pixels of shape {list(array.shape)}: send (N, 28, 28) or (N, 784)")
    if not 1 <= len(array) <= max_rows:
        raise BadInput(f"{len(array)} images: send 1 to {max_rows} per request")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise BadInput("pixels hold NaN or infinity: send numbers 0..255")
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise BadInput(
                f"pixels range {low:g}..{high:g}: send raw values 0..255 (not normalised)"
            )
    return mnist_like(array)


def mnist_like(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) as MNIST writes digits, from images with values in 0..255 or 0..1.

    Image by image: one whose values all lie in 0..1 is scaled by 255 (a digit written 0..255
    has ink far above 1, so nothing else looks like that), and one whose median pixel is on the
    light side is inverted (the paper is most of an image: dark ink on light paper becomes
    MNIST's light ink on a dark ground, as the draw page does).
    """
    images = images.astype(np.float32)
    flat = images.reshape(len(images), -1)
    flat[flat.max(axis=1) <= 1] *= 255
    light = np.median(flat, axis=1) > 127.5
    flat[light] = 255 - flat[light]
    return np.rint(flat).astype(np.uint8).reshape(images.shape)


def probabilities(net, images, config: dict[str, Any], batch_size: int = 1000, tta: bool = False):
    """(N, C) float32 probabilities of the run's C classes for uint8 images (N, 28, 28), on the
    CPU, with the run's own normalisation and input size (``prepare``, as in training).

    ``tta``: test-time augmentation, the probabilities averaged over the image as it is and
    :data:`~digitlab.data.augment.TTA_MOVES`' fixed shifts and turns."""
    # lazy: torch and Lightning, see the top
    import torch

    from digitlab.data.augment import TTA_MOVES, averaged_probabilities
    from digitlab.data.datamodule import prepare

    data, size = config["data"], config["model"].get("input_size", SIDE)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = prepare(
                images[start : start + batch_size],
                torch.device("cpu"),
                data["scale"],
                data["mean"],
                data["std"],
                size,
            )
            fill = -data["mean"] / data["std"]  # a black pixel, normalised
            chunks.append(averaged_probabilities(net, x, TTA_MOVES if tta else ({},), fill))
    return torch.cat(chunks) if chunks else torch.zeros(0, len(run_classes(config)))


def verdicts(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The answer for (N, C) probabilities: ``probabilities`` themselves, ``digit`` int64 (N,)
    the label of the most probable class, ``confidence`` float32 (N,) its probability and
    ``unsure`` bool (N,) where that is below :data:`UNSURE_BELOW`."""
    probs = np.asarray(probs, dtype=np.float32)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0, np.float32)
    return {
        "probabilities": probs,
        "digit": probs.argmax(axis=1).astype(np.int64),
        "confidence": confidence,
        "unsure": confidence < UNSURE_BELOW,
    }


class DigitModel:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict(pixels) -> {"probabilities", "digit",
    "confidence", "unsure"}`` (:func:`verdicts`)."""

    def __init__(self, net, config: dict[str, Any]) -> None:
        self.net, self.config = net, config

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        import torch  # lazy: see the top

        pixels = torch.from_numpy(as_pixels(data))
        return verdicts(probabilities(self.net, pixels, self.config).numpy())


def load(path: str, trusted: Iterable[str] = ()) -> DigitModel:
    """The model of a weights-only checkpoint at ``path`` (see the module docstring)."""
    from digitlab.training.checkpoints import network_from_checkpoint  # lazy: see the top

    net, config = network_from_checkpoint(path, trusted)
    return DigitModel(net, config)


# Where plain ``mlflow.pyfunc.load_model`` gets the user's trust: the environment of the process
# that loads (MLflow hands the loader only the model's own model_config, which never counts).
TRUST_ENV = "DIGITLAB_TRUST"


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> DigitModel:
    """MLflow's entry point, for plain ``mlflow.pyfunc.load_model``.

    A model never widens its own trust: a ``model_config`` asking for ``trust`` is refused, and
    so is a model that carries ``code_paths`` (MLflow has put them on ``sys.path`` by now: they
    are taken off before anything else is imported). Trust your own network's package with
    ``DIGITLAB_TRUST=mypkg[,other]`` in the environment. digitlab's own commands check the
    MLmodel before MLflow sees it (:mod:`digitlab.serving.models`).
    """
    if model_config and model_config.get("trust"):
        raise DigitlabError(
            f"the model at {data_path} asks to trust {model_config['trust']!r} itself: refused, "
            f"nothing of it was run; trust your own package with {TRUST_ENV}=MODULE"
        )
    data = Path(data_path).resolve()
    folder = next((p for p in data.parents if (p / "MLmodel").is_file()), data.parent)
    code = [p for p in sys.path if p and Path(p).resolve().is_relative_to(folder)]
    if code:
        sys.path[:] = [p for p in sys.path if p not in code]
        raise DigitlabError(
            f"the model at {folder} carries code_paths (its own Python files): refused, nothing "
            "of it was run; digitlab models carry weights and a recipe only"
        )
    trusted = tuple(m for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip())
    return load(data_path, trusted)
