"""Predicting with trained runs: one run or checkpoint, or several as an ensemble
(:mod:`digitlab.jobs.ensemble`). The job behind ``digitlab-predict`` and the Python API.

The network is rebuilt from the configuration stored in the checkpoint
(``digitlab.training.checkpoints``: weights only, allow-listed code, strict weights); inputs
get the run's own normalisation and size.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from digitlab.config.classes import run_classes
from digitlab.errors import DigitlabError
from digitlab.jobs.ensemble import predict_ensemble
from digitlab.jobs.inputs import data_name, images_for, kaggle_caveat
from digitlab.jobs.oof import OOF, committee_oof
from digitlab.jobs.outputs import Prediction, write_predictions
from digitlab.serving.ensemble import METHODS
from digitlab.serving.model import probabilities
from digitlab.tracking import ensemble, store
from digitlab.tracking.ensemble import log_results, prediction_run, run_checkpoint
from digitlab.tracking.store import default_tracking_uri
from digitlab.training.checkpoints import network_from_checkpoint


def as_list(value: str | Path | Sequence[str | Path] | None) -> list[str]:
    """``None``, one value or several, as a list of strings."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]


def predict(
    run_id: str | Sequence[str] | None = None,
    checkpoint: str | Path | Sequence[str | Path] | None = None,
    data: str = "kaggle",
    root: str | Path | None = None,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    trusted: tuple[str, ...] = (),
    method: str = "mean",
    skip_missing: bool = False,
    tta: bool = False,
) -> Prediction:
    """Write the (N, C) probabilities of C classes (``.npy``, or ``.csv`` by ``out``'s name).

    For unlabelled images (Kaggle's test.csv) also write ``submission.csv`` beside them and,
    given a run, record them as a run of the ``predictions`` experiment linked to it (the
    training run is never written to). ``trusted``: module names whose code
    the checkpoint's config may name beyond digitlab's (your own network's package).
    Returns a :class:`Prediction`.

    Several runs or checkpoints, or a sweep's parent run (its finished children), predict as an
    ensemble (:mod:`digitlab.jobs.ensemble`, ``method`` "mean" or "vote", ``skip_missing``),
    recorded as a run of its own; the result then also names its members, method and skipped.
    ``tta``: each network's probabilities are averaged over fixed shifts and turns of each image
    (test-time augmentation, :data:`digitlab.data.augment.TTA_MOVES`).

    ``data="oof"`` with cross-validation runs (``data.folds=K``): their out-of-fold
    probabilities, averaged over the runs, scored on every row they cover
    (:func:`digitlab.jobs.oof.committee_oof`), recorded as an ensemble run.
    """
    runs, files = as_list(run_id), as_list(checkpoint)
    if not runs and not files:
        raise DigitlabError(
            "give a run or a checkpoint (run_id= or checkpoint=; --run RUN_ID or --checkpoint "
            "PATH on the command line); several make an ensemble"
        )
    if method not in METHODS:
        raise DigitlabError(f"method {method!r} is unknown: use {' or '.join(METHODS)}")
    command = command_line(
        runs, files, data, root, out, tracking_uri, trusted, method, skip_missing, tta
    )
    if data == OOF:
        if files or tta:
            raise DigitlabError(
                "--data oof reads the out-of-fold predictions cross-validation runs recorded: "
                "give them with --run, without --checkpoint or --tta"
            )
        client = store.open_client(tracking_uri or default_tracking_uri())
        return committee_oof(client, runs, out, command, method)
    root_path = Path(root).expanduser() if root else None
    client = None
    if runs or len(files) > 1:  # an ensemble of checkpoint files is recorded in the store too
        client = store.open_client(tracking_uri or default_tracking_uri())
    if len(runs) + len(files) > 1 or (
        runs and ensemble.children(client, ensemble.get_run(client, runs[0]))
    ):
        return predict_ensemble(
            client, runs, files, data, root_path, out, trusted, method, skip_missing, command, tta
        )
    if runs:
        return predict_one(client, runs[0], None, data, root_path, out, trusted, command, tta)
    return predict_one(client, None, files[0], data, root_path, out, trusted, command, tta)


def command_line(
    runs: Sequence[str],
    files: Sequence[str],
    data: str,
    root: str | Path | None,
    out: str | Path | None,
    tracking_uri: str | None,
    trusted: Sequence[str],
    method: str,
    skip_missing: bool,
    tta: bool = False,
) -> str:
    """The ``digitlab-predict`` command that does what these arguments do (default values left
    out): recorded in the prediction's run, the same whichever door it came in by."""
    words = ["digitlab-predict"]
    if runs:
        words += ["--run", *runs]
    if files:
        words += ["--checkpoint", *files]
    words += ["--data", data]
    if method != "mean":
        words += ["--method", method]
    if skip_missing:
        words.append("--skip-missing")
    if tta:
        words.append("--tta")
    for module in trusted:
        words += ["--trust", module]
    for flag, value in (("--root", root), ("--out", out), ("--tracking-uri", tracking_uri)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def predict_one(
    client,
    run_id: str | None,
    checkpoint: str | None,
    data: str,
    root: Path | None,
    out: str | Path | None,
    trusted: tuple[str, ...],
    command: str,
    tta: bool = False,
) -> Prediction:
    """:func:`predict` for one run (``client``'s) or one checkpoint file; ``command``: its
    :func:`command_line`."""
    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        if run_id is not None:
            path = run_checkpoint(client, run_id, Path(tmp))
        elif checkpoint is not None:
            path = Path(checkpoint)
        else:
            raise ValueError("predict_one takes run_id or checkpoint")  # predict() checked it
        net, config = network_from_checkpoint(path, trusted)
    members = [(run_id or str(checkpoint), config)]
    images, labels, pictures = images_for(data, root, members, trusted)
    probs = probabilities(net, images, config, tta=tta).numpy()

    name = run_id or path.stem
    out = Path(out or f"predictions/{name}-{data_name(data)}.npy")
    classes = run_classes(config)
    warnings = kaggle_caveat(data, members)
    written = write_predictions(probs, probs.argmax(1), labels, out, pictures, classes, warnings)
    result = Prediction.written(written)
    if run_id is None:
        return result
    # recorded as a run of its own: the training run stays as it was
    settings = {"data": data_name(data), "rows": len(probs), "tta": tta}
    with prediction_run(client, run_id, settings, command) as own:
        log_results(client, own, None, {"accuracy": result.accuracy}, result.files)
    return replace(result, run_id=own)
