"""What a prediction writes: the class probabilities, and Kaggle's submission or each picture's
digit beside them; what it answers (:class:`Prediction`), for one run or an ensemble."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.jobs.inputs import Pictures
from digitlab.serving.ensemble import accuracy
from digitlab.serving.model import UNSURE_BELOW


@dataclass(frozen=True)
class Prediction:
    """What a prediction wrote and recorded (the README's API table says what each field is).
    ``members`` is None for one run or checkpoint; ``unsure`` and ``unreadable`` count pictures;
    ``warnings``: one line each, what the numbers do not mean."""

    probabilities: Path
    submission: Path | None
    digits: Path | None
    accuracy: float | None
    n: int
    run_id: str | None = None
    members: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    method: str | None = None
    classes: int = 10
    unsure: int = 0
    unreadable: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def accuracy_se(self) -> float | None:
        """The accuracy's binomial standard error, sqrt(p (1 - p) / n), as ``cv/oof_acc_se``:
        what a difference between two accuracies must exceed to mean anything."""
        if self.accuracy is None:
            return None
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.n)

    @property
    def files(self) -> list[Path]:
        """The files written: the probabilities, then the submission or digits if any."""
        return [f for f in (self.probabilities, self.submission, self.digits) if f is not None]


def write_submission(labels, path: Path) -> None:
    """Kaggle's format: header ``ImageId,Label``, one row per image, ImageId counted from 1."""
    rows = [f"{i},{int(label)}" for i, label in enumerate(labels, start=1)]
    path.write_text("\n".join(["ImageId,Label", *rows]) + "\n")


def write_predictions(
    probs,
    digits,
    labels,
    out: Path,
    pictures: Pictures | None = None,
    classes: Sequence[str] | None = None,
    warnings: Sequence[str] = (),
    **more: Any,
) -> Prediction:
    """Write the (N, C) class probabilities to ``out`` (``.npy``, or ``.csv`` by its name,
    columns ``p<class name>``) and, for unlabelled images, ``submission.csv`` of the predicted
    labels ``digits`` beside it; for ``pictures``, ``digits.csv`` instead, and the probabilities
    get one row per picture, NaN for one that could not be read. ``classes``: the name of each
    class by label (None: the labels). ``more``: the rest of the :class:`Prediction`."""
    names = list(classes) if classes is not None else [str(c) for c in range(probs.shape[1])]
    probs, digits = np.asarray(probs), np.asarray(digits)
    confidence = probs[np.arange(len(probs)), digits] if len(probs) else np.zeros(0)
    rows = probs
    if pictures is not None and pictures.unreadable:
        rows = np.full((len(pictures.files), probs.shape[1]), np.nan, dtype=probs.dtype)
        rows[[i for i in range(len(rows)) if i not in pictures.unreadable]] = probs
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        header = ",".join(f"p{name}" for name in names)
        np.savetxt(out, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    else:
        out = out.with_name(out.name + ".npy") if out.suffix != ".npy" else out
        np.save(out, rows)  # (np.save would add .npy itself, and the path returned be wrong)
    submission = digits_csv = None
    if pictures is not None:
        digits_csv = out.with_name("digits.csv")
        write_digits(digits_csv, pictures, [names[int(d)] for d in digits], confidence)
    elif labels is None:  # Kaggle's test.csv, or any unlabelled CSV: what Kaggle scores
        submission = out.with_name("submission.csv")
        write_submission(digits, submission)
    return Prediction(
        out,
        submission,
        digits_csv,
        accuracy(digits, labels),
        len(rows),
        classes=len(names),
        unsure=int((confidence < UNSURE_BELOW).sum()) if pictures is not None else 0,
        unreadable=len(pictures.unreadable) if pictures is not None else 0,
        warnings=list(warnings),
        **more,
    )


# digits.csv's columns: each picture, its digit (the class's name), the probability of that
# digit, whether that is below UNSURE_BELOW, and why a picture could not be read.
DIGITS_HEADER = ("file", "digit", "confidence", "unsure", "error")


def write_digits(path: Path, pictures: Pictures, digits: Sequence[str], confidence) -> None:
    """``digits.csv``: a row per picture file, in order (:data:`DIGITS_HEADER`); a picture that
    could not be read has an empty digit and its reason in ``error``."""
    answers = iter(zip(digits, confidence, strict=True))
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DIGITS_HEADER)
        for i, picture in enumerate(pictures.files):
            if i in pictures.unreadable:
                writer.writerow([picture, "", "", "", pictures.unreadable[i]])
                continue
            digit, sure = next(answers)
            unsure = "true" if sure < UNSURE_BELOW else "false"
            writer.writerow([picture, digit, f"{sure:.4f}", unsure, ""])
