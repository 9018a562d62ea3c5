"""``digitlab.load(run_id)``: a run's network with its own preprocessing, ready to predict.

``digitlab.fit`` imports this module and answers a bad config before it imports torch (4 s) or
MLflow (2 s): those are imported in the functions that use them, marked lazy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.config.classes import run_classes
from digitlab.errors import DigitlabError
from digitlab.jobs import quiet_downloads
from digitlab.serving.model import as_pixels, probabilities, verdicts
from digitlab.tracking import store
from digitlab.training.checkpoints import network_from_checkpoint


class Model:
    """A trained network and the run config it came from (normalisation, input size).

    ``predict(images)`` takes digits as the data files hold them, uint8 pixel values 0-255,
    one ``(28, 28)`` image or a stack ``(N, 28, 28)`` (numpy or torch), and returns float32
    ``(N, C)`` probabilities of the run's C classes (``classes``: their names, by label) as a
    numpy array; rows sum to 1. Images scaled to 0-1, and
    dark digits on light paper, are recognised and made MNIST-like first (light on dark,
    0-255); other values are refused in one line. ``classify(images)`` answers as the MLflow
    Model does: each image's digit, its confidence and whether it is unsure.
    """

    def __init__(self, net: Any, config: dict[str, Any], run_id: str | None = None) -> None:
        self.net, self.config, self.run_id = net, config, run_id

    @property
    def classes(self) -> tuple[str, ...]:
        """The name of each class, by label: ``predict``'s column ``i`` is ``classes[i]``."""
        return run_classes(self.config)

    def predict(self, images: Any, batch_size: int = 1000):
        return probabilities(self.net, as_images(images), self.config, batch_size).numpy()

    def classify(self, images: Any, batch_size: int = 1000) -> dict[str, Any]:
        """``predict``'s images, answered as the MLflow Model and ``/invocations`` answer:
        ``probabilities`` (N, C), ``digit`` int64 (N,) the label of the most probable class
        (its name: ``classes[digit]``), ``confidence`` float32 (N,) its probability, ``unsure``
        bool (N,): confidence below ``digitlab.serving.model.UNSURE_BELOW``."""
        return verdicts(self.predict(images, batch_size))

    def __repr__(self) -> str:
        name = type(self.net).__name__
        return f"Model({name}, run {self.run_id})" if self.run_id else f"Model({name})"


def as_images(images: Any):
    """uint8 torch images ``(N, 28, 28)``, MNIST-like, from one ``(28, 28)`` image or a stack of
    pixel values 0-255 or 0-1, light ink on dark or dark ink on light
    (:func:`digitlab.serving.model.as_pixels`); or a one-line error saying why not."""
    import torch  # lazy: 4 s, see the top

    x = images.numpy(force=True) if isinstance(images, torch.Tensor) else np.asarray(images)
    x = x[None] if x.ndim == 2 else x
    if x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
        raise DigitlabError(
            f"images of shape {tuple(x.shape)} cannot be predicted: give one 28x28 image or a "
            "stack (N, 28, 28) of pixel values 0-255"
        )
    if not len(x):  # nothing to predict: (0, C) probabilities, as for any other count
        return torch.zeros((0, 28, 28), dtype=torch.uint8)
    return torch.from_numpy(as_pixels(x, max_rows=len(x)))


def load(run_id: str, tracking_uri: str | None = None, trust: Iterable[str] = ()) -> Model:
    """The network of training run ``run_id`` (its logged best checkpoint), in eval mode.

    The checkpoint is read weights-only and its config's code checked against the allow-list
    (``digitlab.training.checkpoints.network_from_checkpoint``); ``trust`` names your own
    network's package, as ``--trust`` does for ``digitlab-predict``. ``tracking_uri``: the store
    (default: ``logger.tracking_uri``, the project's ``mlruns/mlflow.db``).
    """
    from digitlab.tracking.ensemble import run_checkpoint  # lazy: MLflow, see the top

    client = store.open_client(tracking_uri or store.default_tracking_uri())
    check_run(client, str(run_id))
    with tempfile.TemporaryDirectory(prefix="digitlab-load-") as folder, quiet_downloads():
        path = run_checkpoint(client, str(run_id), Path(folder))
        net, config = network_from_checkpoint(path, tuple(trust))
    return Model(net, config, str(run_id))


def check_run(client, run_id: str) -> None:
    """Raise the API's one-line error when ``run_id`` is not a run of ``client``'s store."""
    from mlflow.exceptions import MlflowException  # lazy: see the top

    try:
        client.get_run(run_id)
    except MlflowException:
        raise DigitlabError(
            f"no MLflow run {run_id} in this store: check the id (digitlab.runs() lists them), "
            "or pass tracking_uri= (the store the run was logged to)"
        ) from None
