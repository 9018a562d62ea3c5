"""Class probabilities from a trained run, and a Kaggle submission for Kaggle's test.csv.

    digitlab-predict --run RUN_ID --data kaggle            # -> probabilities + submission.csv
    digitlab-predict --checkpoint best.ckpt --data mnist   # MNIST's t10k images
    digitlab-predict --run RUN_ID --data my_digits.csv     # any CSV in Kaggle's layout

The network is rebuilt from the configuration stored in the checkpoint and its weights are loaded
with ``torch.load(..., weights_only=True)``; inputs get the run's own normalisation and resize.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.tracking.store import default_tracking_uri

DATA_SETS = {
    "kaggle": "Kaggle's unlabelled <root>/digit-recognizer/test.csv (writes a submission)",
    "kaggle-train": "Kaggle's labelled <root>/digit-recognizer/train.csv",
    "mnist": "MNIST's t10k test images under <root>/MNIST/raw/",
}


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


def load_network(path: Path) -> tuple[Any, dict[str, Any]]:
    """The network of a digitlab checkpoint, weights loaded, and the config it was built from."""
    import torch
    from hydra.utils import instantiate

    if not path.is_file():
        raise DigitlabError(f"checkpoint {path} does not exist: give the path of a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DigitlabError(
            f"{path} is not a readable checkpoint ({reason[:160]}): "
            "pass a .ckpt written by digitlab"
        ) from None
    config = (
        checkpoint.get("hyper_parameters", {}).get("config")
        if isinstance(checkpoint, dict)
        else None
    )
    if not isinstance(config, dict) or "model" not in config or "state_dict" not in checkpoint:
        raise DigitlabError(
            f"{path} holds no digitlab run config (hyper_parameters.config): "
            "pass a checkpoint written by digitlab training"
        )
    try:
        net = instantiate(config["model"], input_size=config["data"]["resize"])
        weights = {
            k.removeprefix("net."): v
            for k, v in checkpoint["state_dict"].items()
            if k.startswith("net.")
        }
        net.load_state_dict(weights)
    except DigitlabError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DigitlabError(
            f"{path}: its weights do not fit the network its config describes "
            f"({config['model'].get('_target_', '?')}: {first[:200]}); the checkpoint is damaged "
            "or was edited, retrain or use another checkpoint"
        ) from None
    return net.eval(), config


def load_images(data: str, root: Path) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) and int64 labels (None when the set has none)."""
    from digitlab.data.download import locate
    from digitlab.data.idx import read_images, read_labels
    from digitlab.data.kaggle import read_kaggle_csv

    if data == "kaggle":
        return read_kaggle_csv(root / "digit-recognizer" / "test.csv", labelled=False)
    if data == "kaggle-train":
        return read_kaggle_csv(root / "digit-recognizer" / "train.csv", labelled=True)
    if data == "mnist":
        raw = root / "MNIST" / "raw"
        images = locate(raw, "t10k-images-idx3-ubyte.gz")
        labels = locate(raw, "t10k-labels-idx1-ubyte.gz")
        if images is None or labels is None:
            raise DigitlabError(
                f"MNIST test files missing in {raw}: put t10k-images-idx3-ubyte(.gz) and "
                "t10k-labels-idx1-ubyte(.gz) there or pass --root"
            )
        return read_images(images), read_labels(labels)
    path = Path(data)
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise DigitlabError(
            f"--data {data!r} is neither a data set name ({', '.join(DATA_SETS)}) nor an existing "
            ".csv file in Kaggle's layout"
        )
    with path.open() as f:
        labelled = f.readline().startswith("label,")
    return read_kaggle_csv(path, labelled=labelled)


def probabilities(net, images, config: dict[str, Any], batch_size: int = 1000):
    """(N, 10) float32 class probabilities of uint8 images (N, 28, 28), on the CPU."""
    import torch

    from digitlab.data.datamodule import prepare

    data = config["data"]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = prepare(
                images[start : start + batch_size],
                torch.device("cpu"),
                data["scale"],
                data["mean"],
                data["std"],
                data["resize"],
            )
            chunks.append(net(x).softmax(dim=1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 10)


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
) -> dict[str, Any]:
    """Write the (N, 10) probabilities (``.npy``, or ``.csv`` by the name of ``out``).

    For ``data="kaggle"`` also write ``submission.csv`` beside them and, given a run, log it to that
    run under ``predictions/``. Returns {"probabilities", "submission", "accuracy", "n"}.
    """
    import tempfile

    import numpy as np

    if (run_id is None) == (checkpoint is None):
        raise DigitlabError("give exactly one of --run RUN_ID or --checkpoint PATH")
    client = None
    with tempfile.TemporaryDirectory(prefix="digitlab-predict-") as tmp:
        if run_id is not None:
            from digitlab.tracking import store as tracking

            client = tracking.open_client(tracking_uri or default_tracking_uri())
            checkpoint = run_checkpoint(client, run_id, Path(tmp))
        net, config = load_network(Path(checkpoint))
    root = Path(root or os.environ.get("DIGITLAB_DATA") or config["data"]["root"]).expanduser()
    images, labels = load_images(data, root)
    probs = probabilities(net, images, config).numpy()

    name = run_id or Path(checkpoint).stem
    out = Path(out or f"predictions/{name}-{Path(data).stem}.npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        header = ",".join(f"p{d}" for d in range(10))
        np.savetxt(out, probs, delimiter=",", header=header, comments="", fmt="%.6g")
    else:
        np.save(out, probs)
    result: dict[str, Any] = {
        "probabilities": out,
        "submission": None,
        "accuracy": None,
        "n": len(probs),
    }
    if labels is not None and len(labels):
        result["accuracy"] = float((probs.argmax(1) == labels.numpy()).mean())
    if data == "kaggle":
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
        help=f"{', '.join(DATA_SETS)}, or a .csv in Kaggle's layout (default kaggle)",
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
            args.run, args.checkpoint, args.data, args.root, args.out, args.tracking_uri
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
