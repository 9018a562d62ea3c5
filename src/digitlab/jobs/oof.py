"""A committee's out-of-fold accuracy: ``digitlab-predict --run <cv parent> ... --data oof``.

Each cross-validation parent (``data.folds=K``) recorded its out-of-fold probabilities
(:data:`digitlab.training.crossval.OOF_ARTIFACT`): every non-test row predicted by the fold's
network that never trained on it. Averaging several parents' row by row scores the committee of
their networks on every row without a holdout, provided they cut the same folds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.jobs.outputs import Prediction, write_predictions
from digitlab.tracking.ensemble import ensemble_run, get_run, log_results

OOF = "oof"


def read_oof(client, run_id: str, folder: Path) -> dict[str, np.ndarray]:
    """The out-of-fold table a cross-validation parent logged; one line if it has none."""
    # lazy: the training package imports torch and Lightning
    from digitlab.training.crossval import OOF_ARTIFACT

    get_run(client, run_id)
    logged = {a.path for a in client.list_artifacts(run_id, str(Path(OOF_ARTIFACT).parent))}
    if OOF_ARTIFACT not in logged:
        raise DigitlabError(
            f"run {run_id} has no out-of-fold predictions ({OOF_ARTIFACT}): --data oof takes "
            "cross-validation runs (data.folds=K) whose every fold finished"
        )
    path = client.download_artifacts(run_id, OOF_ARTIFACT, str(folder))
    with np.load(path) as table:
        return {key: table[key] for key in table.files}


def committee_oof(
    client, runs: Sequence[str], out: str | Path | None, command: str, method: str = "mean"
) -> Prediction:
    """The mean of the parents' out-of-fold probabilities, its accuracy (``accuracy``) and that
    accuracy's standard error (``accuracy_se``), recorded as an ensemble run like any committee.
    The parents must have predicted the same rows with the same labels (one ``data.split_seed``,
    ``data.folds`` and ``data.test_size``), else one line says which differ."""
    # lazy: see read_oof
    from digitlab.training.crossval import oof_accuracy

    if method != "mean":
        raise DigitlabError(
            f"--data oof averages the members' probabilities: drop --method {method}"
        )
    with tempfile.TemporaryDirectory(prefix="digitlab-oof-") as tmp:
        tables = [read_oof(client, run_id, Path(tmp) / str(i)) for i, run_id in enumerate(runs)]
    first = tables[0]
    for run_id, table in zip(runs[1:], tables[1:], strict=True):
        if not all(np.array_equal(table[k], first[k]) for k in ("rows", "labels", "fold")):
            raise DigitlabError(
                f"runs {runs[0]} and {run_id} cut different folds: their out-of-fold rows "
                "differ; combine cross-validations of one data.split_seed, data.folds and "
                "data.test_size"
            )
    probs = np.mean([t["probabilities"] for t in tables], axis=0)
    labels = first["labels"]
    scored = oof_accuracy(probs, labels)
    own = [oof_accuracy(t["probabilities"], labels)["cv/oof_acc"] for t in tables]
    # each parent's own out-of-fold pass says whether it averaged over TTA's moves (oof_tta)
    tta = sorted({client.get_run(r).data.params.get("oof_tta", "False") for r in runs})
    settings = {"method": "mean", "data": OOF, "rows": len(labels), "tta": "/".join(tta)}
    with ensemble_run(client, list(runs), settings, command) as run_id:
        path = Path(out or f"predictions/ensemble-{run_id}-oof.npy")
        more: dict[str, Any] = {"run_id": run_id, "members": list(runs), "method": "mean"}
        result = write_predictions(probs, probs.argmax(axis=1), labels, path, **more)
        metrics = {
            "accuracy": scored["cv/oof_acc"],
            "accuracy_se": scored["cv/oof_acc_se"],
            "members/mean_accuracy": sum(own) / len(own),
            "members/best_accuracy": max(own),
        }
        log_results(client, run_id, None, metrics, result.files)
    return result
