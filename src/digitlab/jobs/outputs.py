"""What a prediction writes: the class probabilities, and Kaggle's submission or each picture's
digit beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_submission(labels, path: Path) -> None:
    """Kaggle's format: header ``ImageId,Label``, one row per image, ImageId counted from 1."""
    rows = [f"{i},{int(label)}" for i, label in enumerate(labels, start=1)]
    path.write_text("\n".join(["ImageId,Label", *rows]) + "\n")


def write_predictions(
    probs, digits, labels, out: Path, pictures: list[Path] | None = None
) -> dict[str, Any]:
    """Write the (N, 10) probabilities to ``out`` (``.npy``, or ``.csv`` by its name) and, for
    unlabelled images (Kaggle's test.csv), ``submission.csv`` of ``digits`` beside it; for
    ``pictures`` (the files the images came from), ``digits.csv`` (file, digit) instead.
    Returns {"probabilities", "submission", "digits", "accuracy", "n"}; accuracy against
    ``labels``."""
    import numpy as np

    from digitlab.serving.ensemble import accuracy

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        header = ",".join(f"p{d}" for d in range(10))
        np.savetxt(out, probs, delimiter=",", header=header, comments="", fmt="%.6g")
    else:
        out = out.with_name(out.name + ".npy") if out.suffix != ".npy" else out
        np.save(out, probs)  # (np.save would add .npy itself, and the path returned be wrong)
    result: dict[str, Any] = {
        "probabilities": out,
        "submission": None,
        "digits": None,
        "accuracy": accuracy(digits, labels),
        "n": len(probs),
    }
    if pictures is not None:
        result["digits"] = out.with_name("digits.csv")
        rows = [f"{picture},{int(digit)}" for picture, digit in zip(pictures, digits, strict=True)]
        result["digits"].write_text("\n".join(["file,digit", *rows]) + "\n")
    elif labels is None:  # Kaggle's test.csv, or any unlabelled CSV: what Kaggle scores
        result["submission"] = out.with_name("submission.csv")
        write_submission(digits, result["submission"])
    return result
