"""``data.folds=K``: K runs of one configuration, each validating on one fold, under one parent."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from digitlab.config.targets import trusted_targets
from digitlab.data.augment import TTA_MOVES, averaged_probabilities
from digitlab.data.datamodule import prepare
from digitlab.data.sources import DigitData, read_data
from digitlab.tracking import store
from digitlab.training.build import build_datamodule
from digitlab.training.checkpoints import network_from_checkpoint
from digitlab.training.run import tracked_run, train

# The parent's out-of-fold predictions: every non-test row, predicted by the one fold's network
# that never trained on it (digitlab.jobs.oof combines several parents' into a committee's).
OOF_ARTIFACT = "cv/oof.npz"

# Metrics averaged over the folds into the parent; its val/acc is the CV mean, so a sweep
# summary or an Optuna search reads a cross-validated run like any other.
FOLD_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss")


def cross_validate(
    cfg: DictConfig,
    output_dir: str | Path,
    choices: Mapping[str, Any] | None = None,
    data: DigitData | None = None,
    trial=None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train fold 0..K-1 of ``cfg`` as children of one MLflow parent run.

    The parent records ``cv/val_acc_mean``, ``cv/val_acc_std`` (sample std), the fold means of
    :data:`FOLD_METRICS` and the table ``cv/folds.json``. When every fold ran, also the
    out-of-fold predictions (:data:`OOF_ARTIFACT`): each fold's last checkpoint predicts its own
    validation rows, so every non-test row is predicted once, by a network that never trained
    on it nor was picked on it (``oof_tta=true``: averaged over ``--tta``'s moves), with their
    accuracy ``cv/oof_acc`` and its standard error. With an Optuna ``trial`` the running mean of
    ``val/acc`` is reported after each fold and the remaining folds are skipped when pruned.

    Returns :func:`~digitlab.training.run.train`'s result for the parent (the fold means).
    """
    started, output_dir = time.perf_counter(), Path(output_dir)
    folds = int(cfg.data.folds)
    # Check the folds fit the data before the parent run exists: bad input leaves no run.
    data = data or read_data(cfg.data, trusted_targets(cfg))
    build_datamodule(cfg, data).split()
    client, experiment_id = store.open_experiment(cfg.logger)
    cv_tags = {"digitlab.cv_folds": str(folds), **(tags or {})}
    parent = tracked_run(
        cfg, choices, client, experiment_id, output_dir, cv_tags, suffix=f"-cv{folds}"
    )
    rows: list[dict[str, Any]] = []
    predicted: list[dict[str, np.ndarray]] = []
    with parent:
        parent_id = parent.run_id
        assert parent_id is not None  # this process owns the parent: it is open
        for fold in range(folds):
            fold_cfg = cfg.copy()
            fold_cfg.data.fold = fold
            fold_tags = {"mlflow.parentRunId": parent_id, "digitlab.fold": str(fold)}
            result = train(fold_cfg, output_dir / f"fold{fold}", choices, data, tags=fold_tags)
            rows.append({"fold": fold, "run_id": result["run_id"], **result["metrics"]})
            # The fold's last network, not its best: the best epoch is picked on these very
            # rows, which would flatter them, and a final fit keeps its last epoch too.
            last = output_dir / f"fold{fold}" / "checkpoints" / "last.ckpt"
            if not result["pruned"] and last.is_file():
                predicted.append(fold_predictions(fold_cfg, data, last, fold))
            if (reason := _report(trial, rows)) is not None:
                parent.mark_pruned(reason)
                break
        metrics = summarise_folds(client, parent_id, rows)
        if len(predicted) == folds:
            metrics.update(log_out_of_fold(client, parent_id, out_of_fold(predicted)))
    return {
        "run_id": parent.run_id,
        "run_name": parent.name,
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
        "best_checkpoint": None,
        "pruned": parent.pruned,
    }


def _report(trial, rows: list[dict[str, Any]]) -> str | None:
    """Report the running CV mean to the trial; why to stop, if the pruner says so."""
    if trial is None:
        return None
    mean = statistics.fmean(r["val/acc"] for r in rows)
    trial.report(mean, step=len(rows) - 1)
    if not trial.should_prune():
        return None
    return f"pruned by Optuna after fold {len(rows) - 1} (trial {trial.number}, CV mean {mean:.4f})"


def summarise_folds(client, run_id: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Log the per-fold table and the fold statistics to the parent; return its metrics."""
    columns = ["fold", "run_id", *(m for m in FOLD_METRICS if any(m in r for r in rows))]
    client.log_table(run_id, {c: [r.get(c) for r in rows] for c in columns}, "cv/folds.json")
    accs = [r["val/acc"] for r in rows]
    metrics = {
        "cv/folds_done": float(len(rows)),
        "cv/val_acc_mean": statistics.fmean(accs),
        "cv/val_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
    }
    for name in FOLD_METRICS:
        values = [r[name] for r in rows if name in r]
        if values:
            metrics[name] = statistics.fmean(values)
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    return metrics


def fold_predictions(
    cfg: DictConfig, data: DigitData, checkpoint: str | Path, fold: int
) -> dict[str, np.ndarray]:
    """Fold ``fold``'s validation rows predicted by ``checkpoint`` (with test-time augmentation
    when ``cfg.oof_tta``): ``rows`` (indices into the data set's training rows), ``labels``,
    ``probabilities`` (N, C) and ``fold``."""
    datamodule = build_datamodule(cfg, data)
    images, labels = datamodule.split()["val"]
    net, _ = network_from_checkpoint(Path(checkpoint), trusted_targets(cfg))
    moves = TTA_MOVES if cfg.get("oof_tta", False) else ({},)
    dm, cpu, chunks = datamodule, torch.device("cpu"), []
    with torch.inference_mode():  # on the CPU, batch by batch, in the run's own input units
        for start in range(0, len(images), dm.eval_batch_size):
            batch = images[start : start + dm.eval_batch_size]
            x = prepare(batch, cpu, dm.scale, dm.mean, dm.std, dm.resize)
            chunks.append(averaged_probabilities(net, x, moves, fill=-dm.mean / dm.std))
    probs = torch.cat(chunks).numpy()
    return {
        "rows": datamodule.rows["val"].numpy(),
        "labels": labels.numpy(),
        "probabilities": probs,
        "fold": np.full(len(labels), fold),
    }


def out_of_fold(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The folds' predictions as one table, in the data set's row order."""
    table = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(table["rows"], kind="stable")
    return {key: values[order] for key, values in table.items()}


def oof_accuracy(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``cv/oof_acc`` of (N, C) probabilities against ``labels``, and its binomial standard
    error ``cv/oof_acc_se`` = sqrt(p (1 - p) / N)."""
    p = float((probs.argmax(axis=1) == labels).mean())
    return {"cv/oof_acc": p, "cv/oof_acc_se": math.sqrt(p * (1 - p) / len(labels))}


def log_out_of_fold(client, run_id: str, table: dict[str, np.ndarray]) -> dict[str, float]:
    """Log :data:`OOF_ARTIFACT` and the out-of-fold metrics to the parent; return the metrics."""
    with tempfile.TemporaryDirectory(prefix="digitlab-oof-") as tmp:
        path = Path(tmp) / Path(OOF_ARTIFACT).name
        np.savez_compressed(path, allow_pickle=False, **table)  # rows, labels, probabilities, fold
        client.log_artifact(run_id, str(path), str(Path(OOF_ARTIFACT).parent))
    metrics = oof_accuracy(table["probabilities"], table["labels"])
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    return metrics
