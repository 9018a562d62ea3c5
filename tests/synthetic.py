"""A tiny synthetic digit set in the real file formats (MNIST IDX, Kaggle CSV), for the tests,
the experiments and the tutorial notebook where the real data is not at hand. numpy only, no torch,
no digitlab: the files are written as any other program would write them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 240, 80


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(payload) if str(path).endswith(".gz") else payload)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 28, 28) images whose bright block position encodes the label (0..9), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
    return images, labels


def write_mnist(root: Path, gz: bool = True, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """Write a tiny MNIST in torchvision's layout under ``root/MNIST/raw``; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return Path(root)


def synthetic_classes(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 28, 28) upright images of up to 49 classes, the place of a bright 4x4 block
    (7 x 7 places) encoding the label, plus noise: lopsided, so an image read without being
    turned upright is another class's."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 7)
        images[i, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 255
    return images, labels


def write_idx_set(
    folder: Path,
    files: dict[str, str],
    classes: int,
    transposed: bool = False,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
) -> dict[str, np.ndarray]:
    """A tiny data set in MNIST's IDX layout: ``files`` (``train_images``, ``train_labels``,
    ``test_images``, ``test_labels`` -> file name) in ``folder``, images stored transposed when
    ``transposed`` (EMNIST's way); returns the upright arrays written, by part."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_classes(n_train, classes, 0), synthetic_classes(n_test, classes, 1)
    parts = ("train_images", "train_labels", "test_images", "test_labels")
    arrays = dict(zip(parts, (*train, *test), strict=True))
    for part, array in arrays.items():
        stored = array.transpose(0, 2, 1) if transposed and array.ndim == 3 else array
        write_idx(folder / files[part], stored)
    return arrays


def write_kaggle(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """Write a tiny Kaggle digit-recognizer (CRLF, as Kaggle ships it) under ``root``."""
    folder = Path(root) / "digit-recognizer"
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ",".join(f"pixel{i}" for i in range(784))
    images, labels = synthetic_digits(n_train, 2)
    pairs = zip(images, labels, strict=True)
    rows = [f"{label}," + ",".join(map(str, img.ravel())) for img, label in pairs]
    (folder / "train.csv").write_bytes(("\r\n".join([f"label,{pixels}", *rows]) + "\r\n").encode())
    images, _ = synthetic_digits(n_test, 3)
    rows = [",".join(map(str, img.ravel())) for img in images]
    (folder / "test.csv").write_bytes(("\r\n".join([pixels, *rows]) + "\r\n").encode())
    return Path(root)
