"""Training, as both doors run it: one run, or with ``data.folds=K`` K cross-validation runs
under a parent; inside an Optuna search the job reports to its trial and may be pruned.

``digitlab <overrides>`` and ``digitlab.fit(<overrides>)`` both call :func:`run_job`, so the
same overrides train the same thing through either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from digitlab.callbacks.pruning import TrialPruning
from digitlab.errors import DigitlabError
from digitlab.search.study import current_trial, trial_tags
from digitlab.training.crossval import cross_validate
from digitlab.training.run import train


def run_job(
    cfg,
    output_dir: str | Path,
    choices: Mapping[str, Any] | None = None,
    data=None,
    callbacks: Sequence[Any] = (),
    sweeper_cfg: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` as its ``data.folds`` say; returns ``train``'s (or ``cross_validate``'s)
    result.

    Args:
        output_dir: the job's folder (checkpoints; one sub-folder per fold).
        choices: the chosen option per config group, for run names and tags.
        data: the already decoded data set (``jobs.preflight``), else read here.
        callbacks: more Lightning callbacks (one run only).
        sweeper_cfg: the job's ``hydra.sweeper`` node: inside a digitlab Optuna search it names
            the trial to report to (:func:`digitlab.search.study.current_trial`).
    """
    trial = current_trial(sweeper_cfg, cfg.logger.tracking_uri)
    settings = dict(output_dir=output_dir, choices=dict(choices or {}), data=data)
    if cfg.data.get("folds"):
        if callbacks:
            raise DigitlabError(
                "callbacks= is for one run: with data.folds the folds are trained by "
                "cross-validation, which takes none; drop data.folds or the callbacks"
            )
        return cross_validate(cfg, **settings, trial=trial, tags=trial_tags(trial))
    callbacks = list(callbacks)
    if trial is not None:
        callbacks.append(TrialPruning(trial, monitor="val/acc"))
    return train(cfg, **settings, callbacks=callbacks, tags=trial_tags(trial))
