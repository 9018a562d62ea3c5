"""Predicting with trained runs: one run or checkpoint, or several as an ensemble
(:mod:`digitlab.jobs.ensemble`). The job behind ``digitlab-predict`` and the Python API.

The network is rebuilt from the configuration stored in the checkpoint
(``digitlab.training.checkpoints``: weights only, allow-listed code, strict weights); inputs
get the run's own normalisation and size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.jobs.inputs import data_name, images_for, kaggle_caveat
from digitlab.jobs.outputs import write_predictions
from digitlab.serving.ensemble import METHODS
from digitlab.tracking.store import default_tracking_uri


@dataclass(frozen=True)
class Prediction:
    """What a prediction wrote and recorded.

    ``probabilities``: the (N, C) file of C classes (``.npy`` or ``.csv``); ``submission``: Kaggle's
    ``submission.csv`` beside it (unlabelled images, else None); ``digits``: ``digits.csv``
    (pictures, else None); ``accuracy`` against the labels (None: unlabelled); ``n`` rows;
    ``run_id``: the prediction's own MLflow run (None for a checkpoint file alone). For an
    ensemble, ``members`` (their runs or files), ``skipped`` (one "name: reason" each) and
    ``method``; ``members`` is None for one run or checkpoint. ``classes``: C. For pictures,
    ``unsure``: how many digits have a confidence below ``UNSURE_BELOW``
    (:mod:`digitlab.serving.model`), ``unreadable``: how many pictures could not be read (their
    rows of ``digits.csv`` say why). ``warnings``: one line each, what the numbers do not mean
    (a Kaggle score of a network trained on MNIST's files)."""

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

    @classmethod
    def written(cls, files: dict, **more) -> Prediction:
        """From :func:`digitlab.jobs.outputs.write_predictions`'s answer, plus ``more``."""
        keys = (
            "probabilities",
            "submission",
            "digits",
            "accuracy",
            "n",
            "classes",
            "unsure",
            "unreadable",
            "warnings",
        )
        return cls(**{k: files[k] for k in keys}, **more)

    @property
    def files(self) -> list[Path]:
        """The files written: the probabilities, then the submission or digits if any."""
        return [f for f in (self.probabilities, self.submission, self.digits) if f is not None]


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
    """
    from digitlab.tracking import ensemble, store

    runs, files = as_list(run_id), as_list(checkpoint)
    if not runs and not files:
        raise DigitlabError(
            "give a run or a checkpoint (run_id= or checkpoint=; --run RUN_ID or --checkpoint "
            "PATH on the command line); several make an ensemble"
        )
    if method not in METHODS:
        raise DigitlabError(f"method {method!r} is unknown: use {' or '.join(METHODS)}")
    command = command_line(
        runs, files, data, root, out, tracking_uri, trusted, method, skip_missing
    )
    root = root and Path(root).expanduser()
    client = None
    if runs or len(files) > 1:  # an ensemble of checkpoint files is recorded in the store too
        client = store.open_client(tracking_uri or default_tracking_uri())
    if len(runs) + len(files) > 1 or (
        runs and ensemble.children(client, ensemble.get_run(client, runs[0]))
    ):
        from digitlab.jobs.ensemble import predict_ensemble

        return predict_ensemble(
            client, runs, files, data, root, out, trusted, method, skip_missing, command
        )
    run, file = (runs or [None])[0], (files or [None])[0]
    return predict_one(client, run, file, data, root, out, trusted, command)


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
) -> str:
    """The ``digitlab-predict`` command that does what these arguments do (default values left
    out): recorded in the prediction's run, the same whichever door it came in by."""
    import shlex

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
) -> Prediction:
    """:func:`predict` for one run (``client``'s) or one checkpoint file; ``command``: its
    :func:`command_line`."""
    import tempfile

    from digitlab.config.classes import run_classes
    from digitlab.serving.model import probabilities
    from digitlab.tracking.ensemble import run_checkpoint
    from digitlab.training.checkpoints import network_from_checkpoint

    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        if run_id is not None:
            checkpoint = run_checkpoint(client, run_id, Path(tmp))
        net, config = network_from_checkpoint(Path(checkpoint), trusted)
    members = [(run_id or str(checkpoint), config)]
    images, labels, pictures = images_for(data, root, members, trusted)
    probs = probabilities(net, images, config).numpy()

    name = run_id or Path(checkpoint).stem
    out = Path(out or f"predictions/{name}-{data_name(data)}.npy")
    classes = run_classes(config)
    warnings = kaggle_caveat(data, members)
    written = write_predictions(probs, probs.argmax(1), labels, out, pictures, classes, warnings)
    result = Prediction.written(written)
    if run_id is None:
        return result
    # recorded as a run of its own: the training run stays as it was
    from digitlab.tracking.ensemble import log_results, prediction_run

    settings = {"data": data_name(data), "rows": len(probs)}
    with prediction_run(client, run_id, settings, command) as own:
        log_results(client, own, None, {"accuracy": result.accuracy}, result.files)
    return replace(result, run_id=own)
