"""Predicting with trained runs: one run or checkpoint, or several as an ensemble
(:mod:`digitlab.jobs.ensemble`). The job behind ``digitlab-predict`` and ``digitlab.predict``.

The network is rebuilt from the configuration stored in the checkpoint
(``digitlab.training.checkpoints``: weights only, allow-listed code, strict weights); inputs
get the run's own normalisation and size.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from digitlab.config.classes import run_classes
from digitlab.errors import DigitlabError
from digitlab.jobs import quiet_downloads
from digitlab.jobs.ensemble import predict_ensemble
from digitlab.jobs.inputs import data_name, images_for, kaggle_caveat
from digitlab.jobs.oof import OOF, committee_oof
from digitlab.jobs.outputs import Prediction, write_predictions
from digitlab.serving.ensemble import METHODS
from digitlab.serving.model import probabilities
from digitlab.tracking import ensemble, store
from digitlab.tracking.ensemble import log_results, prediction_run, run_checkpoint
from digitlab.training.checkpoints import network_from_checkpoint

__all__ = ["Prediction", "predict"]


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
    trusted: Iterable[str] = (),
    method: str = "mean",
    skip_missing: bool = False,
    tta: bool = False,
) -> Prediction:
    """Predict ``data`` with a run, a checkpoint, or several (an ensemble), as
    ``digitlab-predict`` does: write the (N, C) probabilities (``.npy``, or ``.csv`` by ``out``'s
    name), Kaggle's ``submission.csv`` for unlabelled images or ``digits.csv`` for pictures, and
    record a run's prediction as a run of the ``predictions`` experiment linked to it (the
    training run is never written to). Returns the :class:`Prediction`; bad input raises
    :class:`digitlab.errors.DigitlabError` in one line.

    ``trusted``: module names whose code the checkpoint's config may name beyond digitlab's
    (your own network's package). Several runs or checkpoints, or a sweep's parent run (its
    finished children), predict as an ensemble (``method`` "mean" or "vote", ``skip_missing``),
    recorded as a run of its own. ``tta``: each network's probabilities averaged over fixed
    shifts and turns of each image. ``data="oof"`` with cross-validation runs: their out-of-fold
    probabilities, averaged (:func:`digitlab.jobs.oof.committee_oof`).
    """
    runs, files, trusted = as_list(run_id), as_list(checkpoint), tuple(trusted)
    if not runs and not files:
        raise DigitlabError(
            "give a run or a checkpoint (run_id= or checkpoint=; --run RUN_ID or --checkpoint "
            "PATH on the command line); several make an ensemble"
        )
    if method not in METHODS:
        raise DigitlabError(f"method {method!r} is unknown: use {' or '.join(METHODS)}")
    if data == OOF and (files or tta):
        raise DigitlabError(
            "--data oof reads the out-of-fold predictions cross-validation runs recorded: "
            "give them with --run, without --checkpoint or --tta"
        )
    command = command_line(
        runs, files, data, root, out, tracking_uri, trusted, method, skip_missing, tta
    )
    root_path = Path(root).expanduser() if root else None
    client = None
    if runs or len(files) > 1:  # an ensemble of checkpoint files is recorded in the store too
        client = store.open_client(tracking_uri or store.default_tracking_uri())
    with quiet_downloads():
        if data == OOF:
            return committee_oof(client, runs, out, command, method)
        job: Callable[..., Prediction] = predict_one
        if len(runs) + len(files) > 1 or (
            runs and ensemble.children(client, ensemble.get_run(client, runs[0]))
        ):
            job = partial(predict_ensemble, method=method, skip_missing=skip_missing)
        return job(client, runs, files, data, root_path, out, trusted, command, tta)


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
    tta: bool,
) -> str:
    """The ``digitlab-predict`` command that does what these arguments do (default values left
    out): recorded in the prediction's run, the same whichever door it came in by."""
    words = ["digitlab-predict"]
    words += ["--run", *runs] if runs else []
    words += ["--checkpoint", *files] if files else []
    words += ["--data", data]
    words += ["--method", method] if method != "mean" else []
    words += ["--skip-missing"] if skip_missing else []
    words += ["--tta"] if tta else []
    for module in trusted:
        words += ["--trust", module]
    for flag, value in (("--root", root), ("--out", out), ("--tracking-uri", tracking_uri)):
        words += [flag, str(value)] if value is not None else []
    return shlex.join(words)


def predict_one(
    client,
    runs: list[str],
    files: list[str],
    data: str,
    root: Path | None,
    out: str | Path | None,
    trusted: tuple[str, ...],
    command: str,
    tta: bool,
) -> Prediction:
    """:func:`predict` for one run (``client``'s) or else one checkpoint file; ``command``: its
    :func:`command_line`."""
    run_id = runs[0] if runs else None
    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        path = run_checkpoint(client, run_id, Path(tmp)) if run_id else Path(files[0])
        net, config = network_from_checkpoint(path, trusted)
    members = [(run_id or files[0], config)]
    images, labels, pictures = images_for(data, root, members, trusted)
    probs = probabilities(net, images, config, tta=tta).numpy()
    out = Path(out or f"predictions/{run_id or path.stem}-{data_name(data)}.npy")
    warnings = kaggle_caveat(data, members)
    classes = run_classes(config)
    result = write_predictions(probs, probs.argmax(1), labels, out, pictures, classes, warnings)
    if run_id is None:
        return result
    # recorded as a run of its own: the training run stays as it was
    settings = {"data": data_name(data), "rows": len(probs), "tta": tta}
    with prediction_run(client, run_id, settings, command) as own:
        log_results(client, own, None, {"accuracy": result.accuracy}, result.files)
    return replace(result, run_id=own)
