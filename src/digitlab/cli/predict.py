"""Class probabilities from a trained run, and a Kaggle submission for Kaggle's test.csv.

    digitlab-predict --run RUN_ID --data kaggle            # -> probabilities + submission.csv
    digitlab-predict --checkpoint best.ckpt --data mnist   # MNIST's t10k images
    digitlab-predict --run RUN_ID --data my_digits.csv     # any CSV in Kaggle's layout
    digitlab-predict --run RUN_ID --data 'photos/*.jpg'    # pictures of digits -> digits.csv
    digitlab-predict --run A B C --data mnist              # an ensemble of three runs
    digitlab-predict --run SWEEP_PARENT_ID --data kaggle   # ... of a sweep's finished children
    digitlab-predict --run SWEEP_PARENT_ID --data holdout  # scored on the rows the runs held out

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
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.serving.ensemble import METHODS
from digitlab.tracking.store import default_tracking_uri


def data_sets() -> list[str]:
    """The names ``--data`` accepts: the options of the ``data`` config group."""
    from digitlab.cli.help import config_groups
    from digitlab.config import CONF_DIR

    return config_groups(CONF_DIR)["data"]


def load_images(data: str, root: Path | None, run_root: str | None = None) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) and int64 labels (None when the set has none).

    ``data`` names a ``conf/data`` option, a ``.csv`` in Kaggle's layout, or pictures of digits
    (:func:`picture_files`). The data root is ``root``, else ``$DIGITLAB_DATA``, else the run's
    own ``data.root`` (``run_root``).
    """
    from digitlab.config.targets import build
    from digitlab.data.kaggle import read_kaggle_csv

    if (pictures := picture_files(data)) is not None:
        import numpy as np
        import torch

        from digitlab.serving.mnistify import read_digit

        return torch.from_numpy(np.stack([read_digit(p) for p in pictures])), None
    path = Path(data)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a CSV in Kaggle's layout")
        return read_kaggle_csv(path, labelled=None)  # None: train.csv's layout or test.csv's
    if data not in data_sets():
        raise DigitlabError(
            f"--data {data!r} is neither a data set ({', '.join(data_sets())}: conf/data/), "
            "holdout (the rows the runs held out), a .csv file in Kaggle's layout, nor pictures "
            "(a .png/.jpg file, a folder of them or a glob such as 'digits/*.png')"
        )
    root = root or (None if os.environ.get("DIGITLAB_DATA") else run_root)
    loaded = build(data_config(data, root), "data source", path="data.source.")
    if loaded.test_images is not None:
        return loaded.test_images, loaded.test_labels
    return loaded.train_images, loaded.train_labels


def picture_files(data: str) -> list[Path] | None:
    """The picture files ``--data`` names, sorted: one picture (``.png``, ``.jpg``, ...), a
    folder's pictures or a glob's; None when ``data`` names none of these (a data set, a CSV).
    Raises DigitlabError when a folder or glob holds no picture, or a picture is missing."""
    import glob

    from digitlab.serving.mnistify import IMAGE_SUFFIXES

    def pictures(paths) -> list[Path]:
        return sorted(p for p in map(Path, paths) if p.is_file()
                      and p.suffix.lower() in IMAGE_SUFFIXES)

    path = Path(data).expanduser()
    if glob.has_magic(data):
        found = pictures(glob.glob(str(path)))
    elif path.is_dir():
        found = pictures(path.iterdir())
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a picture of a digit")
        return [path]
    else:
        return None
    if not found:
        raise DigitlabError(f"--data {data} holds no picture ({', '.join(IMAGE_SUFFIXES)}): give "
                            "a folder or glob of digit pictures")
    return found


# ``--data holdout``: the labelled test split the runs themselves held out.
HOLDOUT = "holdout"


def images_for(data: str, root: Path | None, members: Sequence[tuple[str, Any]],
               trusted: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The images to predict for ``members`` ((name, run config) pairs): ``--data holdout``
    rebuilds the test split they held out (:func:`holdout_images`), any other ``data`` is read
    by :func:`load_images`."""
    if data == HOLDOUT:
        return holdout_images(members, root, trusted)
    return load_images(data, root, members[0][1]["data"].get("root"))


# The data keys that decide which rows a run held out, besides its source and split seed.
SPLIT_KEYS = ("val_size", "test_size", "folds", "fold")


def holdout_images(members: Sequence[tuple[str, Any]], root: Path | None,
                   trusted: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """uint8 images and labels of the test split that ``members`` ((name, run config) pairs)
    held out in training, cut again from each run's data source, sizes and split seed as
    training cut it: for Kaggle's train.csv with ``data.test_size``, rows no member trained on
    (without it, the validation rows that picked each member's best epoch). Every member must
    have held out the same rows, or the ensemble's accuracy would mix rows some members trained
    on. The files are those under ``root`` (``--root``), else each run's own ``data.root``:
    not ``$DIGITLAB_DATA``, a default for new runs that may name other files."""
    import torch

    splits: dict[str, tuple[Any, Any]] = {}
    owner: dict[str, str] = {}  # recipe -> the first member that held out its rows
    for name, config in members:
        recipe, cut = _holdout_recipe(name, config, root, trusted)
        if recipe not in splits:  # members of one sweep share the recipe: read and cut once
            splits[recipe], owner[recipe] = cut(), name
    (first, (images, labels)), *others = splits.items()
    for recipe, (x, y) in others:
        if not (torch.equal(labels, y) and torch.equal(images, x)):
            raise DigitlabError(
                f"--data holdout: {owner[first]} and {owner[recipe]} held out different test "
                "rows (another data.split_seed, seed, source or "
                f"data.{', data.'.join(SPLIT_KEYS)}), so no rows are unseen by both: ensemble "
                "runs trained with one data.split_seed, or pass a data set with --data"
            )
    return images, labels


def _holdout_recipe(name: str, config: Any, root: Path | None, trusted: tuple[str, ...]):
    """(what decides the member's held-out rows, a function that cuts them): its data source,
    once it passes the allow-list, with ``root`` put in; one line for a config that lacks what
    the cut needs."""
    from digitlab.config.targets import build
    from digitlab.data.datamodule import DigitDataModule

    data = config.get("data") if isinstance(config, Mapping) else None
    source = data.get("source") if isinstance(data, Mapping) else None
    if not isinstance(source, Mapping) or "val_size" not in data or "seed" not in config:
        raise DigitlabError(
            f"--data holdout: {name}'s run config lacks data.source, data.val_size or seed, so "
            "its held-out rows cannot be cut again: pass a data set with --data instead"
        )
    source = dict(source)
    if root is not None and "root" in source:
        source["root"] = str(root)
    source_name = f"{name}'s run config"
    split_seed = config["seed"] if data.get("split_seed") is None else data["split_seed"]
    recipe = repr((sorted(source.items()), *(data.get(k) for k in SPLIT_KEYS), split_seed))

    def cut() -> tuple[Any, Any]:
        try:
            datamodule = DigitDataModule(
                load=build(source, "data source", trusted, untrusted=True, path="data.source.",
                           source=source_name, _partial_=True), val_size=data["val_size"],
                test_size=data.get("test_size"), seed=config["seed"], split_seed=split_seed,
                folds=data.get("folds"), fold=data.get("fold", 0))
            return datamodule.split()["test"]
        except DigitlabError as e:
            raise DigitlabError(f"--data holdout, {name}: {e}") from None

    return recipe, cut


def data_config(name: str, root: Path | str | None) -> Any:
    """``conf/data/<name>.yaml``'s prediction source, composed as training composes it."""
    from hydra import compose, initialize_config_dir

    from digitlab.config import CONF_DIR, register_resolvers

    register_resolvers()
    overrides = [f"data={name}", *([f"data.root={root}"] if root else [])]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        data = compose("config", overrides=overrides).data
    return data.get("predict") or data.source


def write_submission(labels, path: Path) -> None:
    """Kaggle's format: header ``ImageId,Label``, one row per image, ImageId counted from 1."""
    rows = [f"{i},{int(label)}" for i, label in enumerate(labels, start=1)]
    path.write_text("\n".join(["ImageId,Label", *rows]) + "\n")


def write_predictions(probs, digits, labels, out: Path, pictures: list[Path] | None = None
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
    result: dict[str, Any] = {"probabilities": out, "submission": None, "digits": None,
                              "accuracy": accuracy(digits, labels), "n": len(probs)}
    if pictures is not None:
        result["digits"] = out.with_name("digits.csv")
        rows = [f"{picture},{int(digit)}" for picture, digit in zip(pictures, digits, strict=True)]
        result["digits"].write_text("\n".join(["file,digit", *rows]) + "\n")
    elif labels is None:  # Kaggle's test.csv, or any unlabelled CSV: what Kaggle scores
        result["submission"] = out.with_name("submission.csv")
        write_submission(digits, result["submission"])
    return result


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
) -> dict[str, Any]:
    """Write the (N, 10) probabilities (``.npy``, or ``.csv`` by the name of ``out``).

    For unlabelled images (Kaggle's test.csv) also write ``submission.csv`` beside them and,
    given a run, record them as a run of the ``predictions`` experiment linked to it (the
    training run is never written to). ``trusted``: module names whose code
    the checkpoint's config may name beyond digitlab's (your own network's package).
    Returns {"probabilities", "submission", "accuracy", "n"}.

    Several runs or checkpoints, or a sweep's parent run (its finished children), predict as an
    ensemble (:mod:`digitlab.cli.ensemble`, ``method`` "mean" or "vote", ``skip_missing``),
    recorded as a run of its own; the result then also holds "run_id", "members", "skipped".
    """
    from digitlab.tracking import ensemble, store

    runs, files = as_list(run_id), as_list(checkpoint)
    if not runs and not files:
        raise DigitlabError("give --run RUN_ID or --checkpoint PATH (several make an ensemble)")
    if method not in METHODS:
        raise DigitlabError(f"--method {method!r} is unknown: use {' or '.join(METHODS)}")
    root = root and Path(root).expanduser()
    client = None
    if runs or len(files) > 1:  # an ensemble of checkpoint files is recorded in the store too
        client = store.open_client(tracking_uri or default_tracking_uri())
    if len(runs) + len(files) > 1 or (
        runs and ensemble.children(client, ensemble.get_run(client, runs[0]))
    ):
        from digitlab.cli.ensemble import predict_ensemble

        return predict_ensemble(client, runs, files, data, root, out, trusted, method,
                                skip_missing)
    return predict_one(client, (runs or [None])[0], (files or [None])[0], data, root, out,
                       trusted)


def predict_one(client, run_id: str | None, checkpoint: str | None, data: str,
                root: Path | None, out: str | Path | None, trusted: tuple[str, ...]
                ) -> dict[str, Any]:
    """:func:`predict` for one run (``client``'s) or one checkpoint file."""
    import tempfile

    from digitlab.serving.model import probabilities
    from digitlab.tracking.ensemble import run_checkpoint
    from digitlab.training.checkpoints import network_from_checkpoint

    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        if run_id is not None:
            checkpoint = run_checkpoint(client, run_id, Path(tmp))
        net, config = network_from_checkpoint(Path(checkpoint), trusted)
    images, labels = images_for(data, root, [(run_id or str(checkpoint), config)], trusted)
    probs = probabilities(net, images, config).numpy()

    name = run_id or Path(checkpoint).stem
    out = Path(out or f"predictions/{name}-{Path(data).stem}.npy")
    result = write_predictions(probs, probs.argmax(1), labels, out, picture_files(data))
    if run_id is not None:  # recorded as a run of its own: the training run stays as it was
        from digitlab.tracking.ensemble import log_results, prediction_run

        with prediction_run(client, run_id, {"data": Path(data).name, "rows": len(probs)}) as own:
            files = [result[k] for k in ("probabilities", "submission", "digits")
                     if result[k] is not None]
            log_results(client, own, None, {"accuracy": result["accuracy"]}, files)
        result["run_id"] = own
    return result

def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitlab-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run", nargs="+", action="extend", default=[], metavar="RUN_ID",
        help="MLflow run id of a training run; several (or repeated --run), or a sweep's parent "
        "run (its FINISHED children), predict as an ensemble",
    )
    parser.add_argument(
        "--checkpoint", nargs="+", action="extend", default=[], metavar="PATH",
        help="a .ckpt file written by digitlab; several (with or without --run) make an ensemble",
    )
    parser.add_argument(
        "--data",
        default="kaggle",
        help="a data set of conf/data/ (kaggle: Kaggle's test.csv, writes submission.csv; "
        "mnist: MNIST's t10k images), a .csv in Kaggle's layout, pictures of digits (a PNG or "
        "JPEG file, a folder of them, or a quoted glob 'digits/*.png': any size, dark on light "
        "or light on dark, made MNIST-like as the draw page does; writes digits.csv), or "
        "holdout: the labelled test "
        "split the runs held out in training, e.g. data.test_size rows of Kaggle's train.csv "
        "(default kaggle)",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="mean",
        help="how an ensemble decides: mean (default) averages the members' class probabilities; "
        "vote gives each member one vote for its most probable digit, the most votes win and a "
        "tie goes to the tied digit of highest mean probability (the probabilities file then "
        "holds each digit's share of the votes)",
    )
    parser.add_argument(
        "--skip-missing", action="store_true",
        help="leave out an ensemble member whose run or checkpoint is missing or refused (one "
        "line each) and predict with the others; without it such a member is an error",
    )
    parser.add_argument(
        "--trust", action="append", default=[], metavar="MODULE",
        help="also allow code of MODULE (your own network's package) in the checkpoint's config; "
        "repeatable. Never trust a module for a checkpoint you did not write",
    )
    parser.add_argument(
        "--root", help="data root (default: $DIGITLAB_DATA, else the run's data.root; for "
        "--data holdout: the run's data.root)"
    )
    parser.add_argument(
        "--out", help="probabilities file, .npy or .csv (default predictions/<run>-<data>.npy, "
        "predictions/ensemble-<ensemble run>-<data>.npy for an ensemble)"
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if not args.run and not args.checkpoint:
        parser.error("give --run RUN_ID or --checkpoint PATH (several make an ensemble)")
    # MLflow draws a progress bar on stderr for every checkpoint it downloads: noise around the
    # one-line errors and summary (set the variable to true to see them).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        result = predict(
            args.run, args.checkpoint, args.data, args.root, args.out, args.tracking_uri,
            tuple(args.trust), args.method, args.skip_missing,
        )
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    if "members" in result:
        members = len(result["members"])
        scored = "" if result["accuracy"] is None else f", accuracy {result['accuracy']:.4f}"
        print(f"digitlab: ensemble of {members} members ({result['method']}){scored}, "
              f"MLflow run {result['run_id']}")
    print(f"digitlab: {result['n']} probabilities (N, 10) -> {result['probabilities']}")
    if result["accuracy"] is not None:
        print(f"  accuracy against the labels: {result['accuracy']:.4f}")
    if result["digits"] is not None:
        print(f"  digit of each picture -> {result['digits']}")
        for row in result["digits"].read_text().splitlines()[1:11]:
            file, digit = row.rsplit(",", 1)
            print(f"    {file}: {digit}")
    if result.get("run_id") and "members" not in result:
        print(f"  recorded as MLflow run {result['run_id']} (experiment predictions)")
    if result["submission"] is not None:
        logged = f", logged to run {result['run_id']}" if result.get("run_id") else ""
        print(f"  Kaggle submission -> {result['submission']}{logged}")


if __name__ == "__main__":
    main()
