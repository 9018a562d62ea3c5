"""Class probabilities from a trained run, and a Kaggle submission for Kaggle's test.csv.

    digitlab-predict --run RUN_ID --data kaggle            # -> probabilities + submission.csv
    digitlab-predict --checkpoint best.ckpt --data mnist   # MNIST's t10k images
    digitlab-predict --run RUN_ID --data my_digits.csv     # any CSV in Kaggle's layout

``--data NAME`` reads the data set that ``conf/data/NAME.yaml`` defines (its ``predict`` source,
else the test split of its ``source``). The network is rebuilt from the configuration stored in
the checkpoint (``digitlab.training.checkpoints``: weights only, allow-listed code, strict
weights); inputs get the run's own normalisation and size. Unlabelled images (Kaggle's test.csv)
also get a ``submission.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri


def run_checkpoint(client, run_id: str, folder: Path) -> Path:
    """Download the best checkpoint a training run logged (artifact ``checkpoints/*.ckpt``)."""
    try:
        client.get_run(run_id)
    except Exception:
        raise DigitlabError(
            f"no MLflow run {run_id} in this store: check the id, or pass --tracking-uri "
            "(the store the run was logged to)"
        ) from None
    names = [
        a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")
    ]
    if not names:
        raise DigitlabError(
            f"run {run_id} logged no checkpoint (was logger.log_checkpoint=false?): "
            "pass --checkpoint with the job folder's checkpoints/best.ckpt instead"
        )
    return Path(client.download_artifacts(run_id, names[0], str(folder)))


def data_sets() -> list[str]:
    """The names ``--data`` accepts: the options of the ``data`` config group."""
    from digitlab.cli.help import config_groups
    from digitlab.config import CONF_DIR

    return config_groups(CONF_DIR)["data"]


def load_images(data: str, root: Path | None, run_root: str | None = None) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) and int64 labels (None when the set has none).

    ``data`` names a ``conf/data`` option or a ``.csv`` in Kaggle's layout. The data root is
    ``root``, else ``$DIGITLAB_DATA``, else the run's own ``data.root`` (``run_root``).
    """
    from hydra.utils import instantiate

    from digitlab.config.targets import check_targets
    from digitlab.data.kaggle import read_kaggle_csv

    path = Path(data)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a CSV in Kaggle's layout")
        with path.open() as f:
            labelled = f.readline().lstrip("\ufeff").startswith("label,")
        return read_kaggle_csv(path, labelled=labelled)
    if data not in data_sets():
        raise DigitlabError(
            f"--data {data!r} is neither a data set ({', '.join(data_sets())}: conf/data/) nor "
            "a .csv file in Kaggle's layout"
        )
    root = root or (None if os.environ.get("DIGITLAB_DATA") else run_root)
    source = data_config(data, root)
    check_targets(source)
    loaded = instantiate(source)
    if loaded.test_images is not None:
        return loaded.test_images, loaded.test_labels
    return loaded.train_images, loaded.train_labels


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


def predict(
    run_id: str | None = None,
    checkpoint: str | Path | None = None,
    data: str = "kaggle",
    root: str | Path | None = None,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    trusted: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write the (N, 10) probabilities (``.npy``, or ``.csv`` by the name of ``out``).

    For unlabelled images (Kaggle's test.csv) also write ``submission.csv`` beside them and,
    given a run, log it to that run under ``predictions/``. ``trusted``: module names whose code
    the checkpoint's config may name beyond digitlab's (your own network's package).
    Returns {"probabilities", "submission", "accuracy", "n"}.
    """
    import tempfile

    import numpy as np

    from digitlab.serving.model import probabilities
    from digitlab.training.checkpoints import network_from_checkpoint

    if (run_id is None) == (checkpoint is None):
        raise DigitlabError("give exactly one of --run RUN_ID or --checkpoint PATH")
    client = None
    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        if run_id is not None:
            from digitlab.tracking import store

            client = store.open_client(tracking_uri or default_tracking_uri())
            checkpoint = run_checkpoint(client, run_id, Path(tmp))
        net, config = network_from_checkpoint(Path(checkpoint), trusted)
    images, labels = load_images(data, root and Path(root).expanduser(), config["data"].get("root"))
    probs = probabilities(net, images, config).numpy()

    name = run_id or Path(checkpoint).stem
    out = Path(out or f"predictions/{name}-{Path(data).stem}.npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        header = ",".join(f"p{d}" for d in range(10))
        np.savetxt(out, probs, delimiter=",", header=header, comments="", fmt="%.6g")
    else:
        np.save(out, probs)
    result: dict[str, Any] = {"probabilities": out, "submission": None, "accuracy": None,
                              "n": len(probs)}
    if labels is not None and len(labels):
        result["accuracy"] = float((probs.argmax(1) == labels.numpy()).mean())
    if labels is None:  # Kaggle's test.csv, or any unlabelled CSV: what Kaggle scores
        submission = out.with_name("submission.csv")
        write_submission(probs.argmax(1), submission)
        result["submission"] = submission
        if client is not None:
            client.log_artifact(run_id, str(submission), "predictions")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="digitlab-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_ID", help="MLflow run id of a training run")
    source.add_argument("--checkpoint", metavar="PATH", help="a .ckpt file written by digitlab")
    parser.add_argument(
        "--data",
        default="kaggle",
        help="a data set of conf/data/ (kaggle: Kaggle's test.csv, writes submission.csv; "
        "mnist: MNIST's t10k images), or a .csv in Kaggle's layout (default kaggle)",
    )
    parser.add_argument(
        "--trust", action="append", default=[], metavar="MODULE",
        help="also allow code of MODULE (your own network's package) in the checkpoint's config; "
        "repeatable. Never trust a module for a checkpoint you did not write",
    )
    parser.add_argument(
        "--root", help="data root (default: $DIGITLAB_DATA, else the run's data.root)"
    )
    parser.add_argument(
        "--out", help="probabilities file, .npy or .csv (default predictions/<run>-<data>.npy)"
    )
    parser.add_argument("--tracking-uri", help=f"MLflow store (default {default_tracking_uri()})")
    args = parser.parse_args(argv)
    try:
        result = predict(
            args.run, args.checkpoint, args.data, args.root, args.out, args.tracking_uri,
            tuple(args.trust),
        )
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"digitlab: {result['n']} probabilities (N, 10) -> {result['probabilities']}")
    if result["accuracy"] is not None:
        print(f"  accuracy against the labels: {result['accuracy']:.4f}")
    if result["submission"] is not None:
        logged = f", logged to run {args.run}" if args.run else ""
        print(f"  Kaggle submission -> {result['submission']}{logged}")


if __name__ == "__main__":
    main()
