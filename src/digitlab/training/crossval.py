"""``data.folds=K``: K runs of one configuration, each validating on one fold, under one parent."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from digitlab.config import project_root
from digitlab.config.targets import trusted_targets
from digitlab.data.sources import DigitData, read_data
from digitlab.tracking import store
from digitlab.tracking.run import TrackedRun, git_commit, run_name
from digitlab.tracking.sweep import sweep_tags, swept_values
from digitlab.training.build import build_datamodule, plain
from digitlab.training.run import train

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

    The parent records ``cv/val_acc_mean``, ``cv/val_acc_std`` (sample std over the folds),
    the fold means of :data:`FOLD_METRICS` and the table ``cv/folds.json`` (one row per fold).
    With an Optuna ``trial`` the running mean of ``val/acc`` is reported after each fold (step =
    fold) and the remaining folds are skipped when the pruner says so.

    Returns:
        :func:`~digitlab.training.run.train`'s result for the parent: ``metrics`` holds the
        fold means, ``pruned`` why the folds stopped early (else None).
    """
    started, output_dir = time.perf_counter(), Path(output_dir)
    folds = int(cfg.data.folds)
    # Check the folds fit the data before the parent run exists: bad input leaves no run.
    data = data or read_data(cfg.data, trusted_targets(cfg))
    build_datamodule(cfg, data).split()
    client, experiment_id = store.open_experiment(cfg.logger)
    parent_tags = {
        f"choice.{k}": str(v)
        for k, v in (choices or {}).items()
        if v is not None and not k.startswith("hydra")
    }
    parent_tags.update({"digitlab.cv_folds": str(folds), **sweep_tags(), **(tags or {})})
    if commit := git_commit(project_root()):
        parent_tags["mlflow.source.git.commit"] = commit
    name = cfg.logger.run_name or run_name(choices or {}, cfg.seed, swept_values())
    parent = TrackedRun(
        client,
        experiment_id,
        plain(cfg),
        output_dir,
        name=f"{name}-cv{folds}",
        tags=parent_tags,
    )
    rows: list[dict[str, Any]] = []
    with parent:
        parent_id = parent.run_id
        assert parent_id is not None  # this process owns the parent: it is open
        for fold in range(folds):
            fold_cfg = cfg.copy()
            fold_cfg.data.fold = fold
            fold_tags = {"mlflow.parentRunId": parent_id, "digitlab.fold": str(fold)}
            result = train(fold_cfg, output_dir / f"fold{fold}", choices, data, tags=fold_tags)
            rows.append({"fold": fold, "run_id": result["run_id"], **result["metrics"]})
            if (reason := _report(trial, rows)) is not None:
                parent.mark_pruned(reason)
                break
        metrics = summarise_folds(client, parent_id, rows)
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
