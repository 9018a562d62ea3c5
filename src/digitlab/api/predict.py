"""``digitlab.predict(run_id=...)``: what ``digitlab-predict`` writes and records, from Python."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from digitlab.api.model import no_progress_bars
from digitlab.jobs.predict import Prediction
from digitlab.jobs.predict import predict as job

__all__ = ["Prediction", "predict"]


def predict(
    run_id: str | Sequence[str] | None = None,
    checkpoint: str | Path | Sequence[str | Path] | None = None,
    data: str = "kaggle",
    root: str | Path | None = None,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    trusted: Iterable[str] = (),
    method: str = "mean",
    skip_missing: bool = False,
    tta: bool = False,
) -> Prediction:
    """Predict ``data`` with a run, a checkpoint, or several (an ensemble), as
    ``digitlab-predict --run ... --data ...`` does: the same job
    (:func:`digitlab.jobs.predict.predict`), files and MLflow runs. Returns the
    :class:`Prediction`: the files' paths, accuracy (labelled data), rows and the prediction's
    own run; bad input raises :class:`digitlab.errors.DigitlabError` in one line."""
    with no_progress_bars():
        return job(
            run_id=run_id,
            checkpoint=checkpoint,
            data=data,
            root=root,
            out=out,
            tracking_uri=tracking_uri,
            trusted=tuple(trusted),
            method=method,
            skip_missing=skip_missing,
            tta=tta,
        )
