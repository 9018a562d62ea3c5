"""What a prediction writes: the class probabilities, and Kaggle's submission or each picture's
digit beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_submission(labels, path: Path) -> None:
    """Kaggle's format: header ``ImageId,Label``, one row per image, ImageId counted from 1."""
    rows = [f"{i},{int(label)}" for i, label in enumerate(labels, start=1)]
    path.write_text("\n".join(["ImageId,Label", *rows]) + "\n")


def write_predictions(
    probs,
    digits,
    labels,
    out: Path,
    pictures: list[Path] | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the (N, C) class probabilities to ``out`` (``.npy``, or ``.csv`` by its name,
    columns ``p<class name>``) and, for unlabelled images (Kaggle's test.csv), ``submission.csv``
    of the predicted labels ``digits`` beside it; for ``pictures`` (the files the images came
    from), ``digits.csv`` (file, predicted class name) instead. ``classes``: the name of each
    class by label (None: the labels themselves). Returns {"probabilities", "submission",
    "digits", "accuracy", "n", "classes"} (``classes``: how many columns); accuracy against
    ``labels``."""
    import numpy as np

    from digitlab.serving.ensemble import accuracy

    names = list(classes) if classes is not None else [str(c) for c in range(probs.shape[1])]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        header = ",".join(f"p{name}" for name in names)
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
        "classes": len(names),
    }
    if pictures is not None:
        result["digits"] = out.with_name("digits.csv")
        rows = [f"{picture},{names[int(d)]}" for picture, d in zip(pictures, digits, strict=True)]
        result["digits"].write_text("\n".join(["file,digit", *rows]) + "\n")
    elif labels is None:  # Kaggle's test.csv, or any unlabelled CSV: what Kaggle scores
        result["submission"] = out.with_name("submission.csv")
        write_submission(digits, result["submission"])
    return result
