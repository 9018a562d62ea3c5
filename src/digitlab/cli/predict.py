"""Class probabilities from a trained run, and a Kaggle submission for Kaggle's test.csv.

    digitlab-predict --run RUN_ID --data kaggle            # -> probabilities + submission.csv
    digitlab-predict --checkpoint best.ckpt --data mnist   # MNIST's t10k images
    digitlab-predict --run RUN_ID --data my_digits.csv     # any CSV in Kaggle's layout
    digitlab-predict --run RUN_ID --data 'photos/*.jpg'    # pictures of digits -> digits.csv
    digitlab-predict --run RUN_ID --data t10k-images-idx3-ubyte.gz  # an IDX images file
    digitlab-predict --run A B C --data mnist              # an ensemble of three runs
    digitlab-predict --run SWEEP_PARENT_ID --data kaggle   # ... of a sweep's finished children
    digitlab-predict --run SWEEP_PARENT_ID --data holdout  # scored on the rows the runs held out
    digitlab-predict --run CV_A CV_B --data oof            # a committee's out-of-fold accuracy

``--data NAME`` reads the data set that ``conf/data/NAME.yaml`` defines (its ``predict`` source,
else the test split of its ``source``). The network is rebuilt from the configuration stored in
the checkpoint (``digitlab.training.checkpoints``: weights only, allow-listed code, strict
weights); inputs get the run's own normalisation and size. Unlabelled images (Kaggle's test.csv)
also get a ``submission.csv``.

Several runs or checkpoints (or a sweep's parent run) predict as an ensemble: every member is
loaded the same way and fed its own preprocessing, their probabilities are averaged (or their
digits put to a vote, --method vote), and the ensemble is recorded as a run of the MLflow
experiment ``ensembles``: its members, method, accuracy and prediction files.
"""

from __future__ import annotations

import argparse
import csv
import sys

from digitlab.cli import plain
from digitlab.errors import DigitlabError
from digitlab.serving.ensemble import METHODS
from digitlab.serving.model import UNSURE_BELOW
from digitlab.tracking.store import default_tracking_uri


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab-predict",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        nargs="+",
        action="extend",
        default=[],
        dest="run_id",
        metavar="RUN_ID",
        help="MLflow run id of a training run; several (or repeated --run), or a sweep's parent "
        "run (its FINISHED children), predict as an ensemble",
    )
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="a .ckpt file written by digitlab; several (with or without --run) make an ensemble",
    )
    parser.add_argument(
        "--data",
        default="kaggle",
        help="a data set of conf/data/ (kaggle: Kaggle's test.csv, writes submission.csv; "
        "mnist: MNIST's t10k images), a .csv in Kaggle's layout, an IDX images file (.gz or "
        "not; scored by the labels file beside it, if any), pictures of digits (a PNG or "
        "JPEG file, a folder of them, or a quoted glob 'digits/*.png': any size, dark on light "
        "or light on dark, a scan or a photo of a page; writes digits.csv: each digit, its "
        "confidence, unsure below 0.8, and why a picture could not be read), or "
        "holdout: the labelled test "
        "split the runs held out in training, e.g. data.test_size rows of Kaggle's train.csv, "
        "or oof: cross-validation runs' (data.folds) out-of-fold predictions, averaged "
        "(default kaggle)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="mean",
        help="how an ensemble decides: mean (default) averages the members' class probabilities; "
        "vote gives each member one vote for its most probable digit, the most votes win and a "
        "tie goes to the tied digit of highest mean probability (the probabilities file then "
        "holds each digit's share of the votes)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: each network's probabilities averaged over the image as "
        "it is, shifted a pixel each way and turned 8 degrees each way (7 passes, 7x the time)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out an ensemble member whose run or checkpoint is missing or refused (one "
        "line each) and predict with the others; without it such a member is an error",
    )
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        dest="trusted",
        metavar="MODULE",
        help="also allow code of MODULE (your own network's package) in the checkpoint's config; "
        "repeatable. Never trust a module for a checkpoint you did not write",
    )
    parser.add_argument(
        "--root",
        help="data root (default: $DIGITLAB_DATA, else the project's data/; never a run's)",
    )
    parser.add_argument(
        "--out",
        help="probabilities file, .npy or .csv (default predictions/<run>-<data>.npy, "
        "predictions/ensemble-<ensemble run>-<data>.npy for an ensemble)",
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if not args.run_id and not args.checkpoint:
        parser.error("give --run RUN_ID or --checkpoint PATH (several make an ensemble)")
    # lazy: torch and MLflow, 6 s, which --help and a missing argument do without
    from digitlab.jobs.predict import predict

    try:
        result = predict(**vars(args))  # each option's dest is the job's keyword
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    for line in summary(result):
        print(line)


def summary(result) -> list[str]:
    """The lines printed for a :class:`digitlab.jobs.predict.Prediction`."""
    ensemble = result.members is not None
    lines = []
    if ensemble:
        scored = "" if result.accuracy is None else f", accuracy {result.accuracy:.4f}"
        lines.append(
            f"digitlab: ensemble of {len(result.members)} members ({result.method}){scored}, "
            f"MLflow run {result.run_id}"
        )
    lines.append(
        f"digitlab: {result.n} probabilities (N, {result.classes}) -> {result.probabilities}"
    )
    if result.accuracy is not None:
        lines.append(
            f"  accuracy against the labels: {result.accuracy:.4f} ± {result.accuracy_se:.4f} "
            f"(standard error over {result.n:,} rows)"
        )
    if result.digits is not None:
        lines.append(f"  digit of each picture -> {result.digits}")
        lines += [f"    {line}" for line in picture_lines(result.digits, 10)]
        if result.unsure:
            lines.append(
                f"  {result.unsure} of {result.n - result.unreadable} unsure (confidence below "
                f"{UNSURE_BELOW}): look at those pictures"
            )
        if result.unreadable:
            lines.append(
                f"  {result.unreadable} of {result.n} pictures could not be read: their rows "
                "of digits.csv say why"
            )
    if result.run_id and not ensemble:
        lines.append(f"  recorded as MLflow run {result.run_id} (experiment predictions)")
    if result.submission is not None:
        logged = f", logged to run {result.run_id}" if result.run_id else ""
        lines.append(f"  Kaggle submission -> {result.submission}{logged}")
    lines += [f"  warning: {warning}" for warning in result.warnings]
    return lines


def picture_lines(digits_csv, limit: int) -> list[str]:
    """The first ``limit`` rows of ``digits.csv``, one line each: file, digit and confidence
    (marked unsure), or why the picture could not be read (a reason that names its file)."""
    with open(digits_csv, newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [
        row["error"]
        if row["error"]
        else f"{row['file']}: {row['digit']} ({row['confidence']}"
        + (", unsure)" if row["unsure"] == "true" else ")")
        for row in rows
    ]


if __name__ == "__main__":
    main()
