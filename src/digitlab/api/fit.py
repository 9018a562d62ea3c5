"""``digitlab.fit(*overrides)``: train one configuration from Python, as the command line does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitlab.api.compose import compose_job
from digitlab.api.model import Model
from digitlab.clock import job_started
from digitlab.jobs.preflight import preflight
from digitlab.jobs.resume import config_to_resume
from digitlab.training.checkpoints import network_from_checkpoint


@dataclass
class FitResult:
    """One finished run: its MLflow id and name, final metrics, wall time and trained model."""

    run_id: str
    run_name: str
    metrics: dict[str, float]  # e.g. {"test/acc": 0.98, "val/acc": ..., "train/loss": ...}
    seconds: float  # wall time of the whole fit, data loading and test included
    model: Model | None  # the best checkpoint's network, ready to ``predict`` (None: K folds)
    checkpoint: Path | None  # the best checkpoint on disk (also logged to the run)
    config: Any = field(repr=False)  # the composed DictConfig that was run

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k} {self.metrics[k]:.4f}" for k in ("test/acc", "val/acc") if k in self.metrics
        )
        return f"FitResult({self.run_name}, run {self.run_id}, {shown}, {self.seconds:.1f} s)"


def fit(*overrides: str, callbacks: Sequence[Any] = ()) -> FitResult:
    """Train and test the configuration that ``digitlab <overrides>`` would, recorded as one run
    in the same MLflow store; returns the run id, metrics, wall time and the trained model.

    The command line's checks run first (config values, tracking server, data files), so a bad
    input raises :class:`digitlab.errors.DigitlabError` in one line and leaves no run. An
    interrupted kernel (Interrupt, SIGINT or SIGTERM) ends the run KILLED with its last
    checkpoint logged, and raises :class:`digitlab.errors.Interrupted` naming ``resume=<id>``.
    ``callbacks``: more Lightning callbacks, after the ``callbacks`` group's.
    """
    job_started("digitlab.fit was called")
    job = compose_job(overrides)
    job.cfg = config_to_resume(job.cfg, overrides)  # resume=: the run's own config
    data = preflight(job.cfg)  # the command line's checks, before torch is imported
    # lazy: torch and Lightning, 12 s, after the checks above have answered
    from digitlab.jobs.train import run_job

    output_dir = unused_folder(job.output_dir)
    result = run_job(job.cfg, output_dir, job.choices, data, callbacks)
    model: Model | None = None
    best: Path | None = None
    # Cross-validation (data.folds) is K runs under a parent, whose metrics are the folds'
    # means: no one network stands for it (each fold's is in its own run).
    if not job.cfg.data.get("folds"):
        # The best checkpoint is the model test/acc measured; without validation there is none,
        # and the end of training (last.ckpt) is what there is.
        best = Path(result["best_checkpoint"] or output_dir / "checkpoints" / "last.ckpt")
        net, config = network_from_checkpoint(best, tuple(job.cfg.get("trusted_targets") or ()))
        model = Model(net, config, result["run_id"])
    keys = ("run_id", "run_name", "metrics", "seconds")
    return FitResult(**{k: result[k] for k in keys}, model=model, checkpoint=best, config=job.cfg)


def unused_folder(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ``-3``... if a run already wrote there: the job folder is
    named by the second (Hydra's ``hydra.run.dir``), and two fits in one second must not share
    checkpoints."""
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate
