"""A run's best network as an MLflow Model (a LoggedModel linked to the run and its test metrics).

The model is ``python_function`` with :mod:`digitlab.serving.model` as its loader and a
weights-only checkpoint as its data (see that module for why not ``mlflow.pytorch``'s pickle).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from digitlab.tracking.registry import MODEL_NAME

LOADER = "digitlab.serving.model"


def signature(num_classes: int = 10):
    """Raw pixels in; the probability of each of the ``num_classes`` classes, the label of the
    most probable, its probability (``confidence``) and whether that is low (``unsure``) out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities"),
                TensorSpec(np.dtype(np.int64), (-1,), "digit"),
                TensorSpec(np.dtype(np.float32), (-1,), "confidence"),
                TensorSpec(np.dtype(np.bool_), (-1,), "unsure"),
            ]
        ),
    )


def slim_checkpoint(checkpoint: str | Path, folder: Path) -> Path:
    """The network's weights and the run config only (no optimizer state): the model's data."""
    # lazy: torch costs 2 s, paid only when a model is logged: digitlab-serve reads LOADER here
    # to list and check the store's models, which needs no torch.
    import torch

    from digitlab.training.checkpoints import load_checkpoint, net_state_dict

    full = load_checkpoint(checkpoint)
    slim = {
        "state_dict": net_state_dict(full["state_dict"]),
        "hyper_parameters": {"config": full["hyper_parameters"]["config"]},
    }
    path = folder / "network.ckpt"
    torch.save(slim, path)
    return path


def requirements() -> list[str]:
    """Pinned explicitly: MLflow's own inference loads the model in a subprocess (seconds)."""
    return [f"{name}=={version(name)}" for name in ("digitlab", "mlflow", "torch", "numpy")]


def log_model(
    tracking_uri: str,
    run_id: str,
    checkpoint: str | Path,
    example,
    metrics: Mapping[str, float],
    num_classes: int = 10,
    step: int = 0,
) -> str:
    """Log ``checkpoint``'s network as the run's model ``model``; returns its model id.
    ``example``: uint8 images (n, 28, 28); ``metrics``: the run's test metrics, also logged onto
    the model (how the registry ranks it) at ``step`` (the run's last epoch); ``num_classes``:
    the width of the probabilities."""
    # Through a client on tracking_uri only: the fluent API (mlflow.pyfunc.log_model, start_run)
    # works on the process's global URI, which a notebook calling digitlab.fit keeps its own.
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, params=run.data.params
    )
    try:
        with tempfile.TemporaryDirectory(prefix="digitlab-model-") as tmp, _quiet_mlflow():
            data = slim_checkpoint(checkpoint, Path(tmp))
            folder = Path(tmp) / MODEL_NAME
            mlflow.pyfunc.save_model(
                folder,
                loader_module=LOADER,
                data_path=str(data),
                signature=signature(num_classes),
                input_example=example,
                pip_requirements=requirements(),
                mlflow_model=Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=run_id,
                    model_id=model.model_id,
                ),
            )
            client.log_model_artifacts(model.model_id, str(folder))
        # The run lists the model among its outputs; the caller sets the run's final status.
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
        if metrics:
            now = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[
                    Metric(key, float(value), now, step, model_id=model.model_id)
                    for key, value in metrics.items()
                ],
            )
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow narrates logging a model (uv project found, input example validated, pip not
    found in a uv environment); a run's output keeps to what the user asked for."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_metrics(client, model_id: str) -> dict[str, Any]:
    """The metrics logged onto a LoggedModel, by name."""
    return {m.key: m.value for m in client.get_logged_model(model_id).metrics or []}
