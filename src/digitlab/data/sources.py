"""Data sources: each loads a data set from disk into plain tensors, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.data.download import MNIST_FILES, download_mnist, locate, missing_files
from digitlab.data.idx import read_images, read_labels
from digitlab.data.kaggle import read_kaggle_csv
from digitlab.errors import DigitlabError

if TYPE_CHECKING:  # loading and validating a file needs no torch until it is valid
    import torch


@dataclass
class DigitData:
    """Decoded images (uint8, (N, 28, 28)) and labels (int64, (N,)).

    ``test_*`` is None when the source has no labelled test set of its own (Kaggle);
    ``train_labels`` is None only for an unlabelled set read for prediction; ``files`` may be
    empty for a source that reads no files.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor | None
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    files: tuple[Path, ...] = ()  # the files it was read from: the run's data lineage


def load_mnist(
    root: str | Path, download: bool = True, mirrors: list[str] | None = None
) -> DigitData:
    """MNIST from ``<root>/MNIST/raw/``; missing files are downloaded first when allowed."""
    raw_dir = Path(root).expanduser() / "MNIST" / "raw"
    missing = missing_files(raw_dir)
    if missing and download:
        _check_root(raw_dir.parent.parent)
        download_mnist(raw_dir, mirrors)
    elif missing and not raw_dir.is_dir():
        raise DigitlabError(
            f"data folder {raw_dir} does not exist: point DIGITLAB_DATA (or data.root) at the "
            "folder holding MNIST/raw/, or set data.source.download=true"
        )
    elif missing:
        raise DigitlabError(
            f"MNIST files missing in {raw_dir}: {', '.join(missing)}; copy them there, set "
            "data.source.download=true, or point DIGITLAB_DATA (or data.root) at a folder holding "
            "MNIST/raw/"
        )
    paths = [locate(raw_dir, name) for name, _ in MNIST_FILES]
    train_images, train_labels = read_images(paths[0]), read_labels(paths[1])
    test_images, test_labels = read_images(paths[2]), read_labels(paths[3])
    _check_counts(paths[0], train_images, paths[1], train_labels)
    _check_counts(paths[2], test_images, paths[3], test_labels)
    return DigitData(train_images, train_labels, test_images, test_labels, tuple(paths))


def load_kaggle(root: str | Path, file: str = "train.csv", labelled: bool = True) -> DigitData:
    """Kaggle's ``<root>/digit-recognizer/<file>`` (``file`` may be an absolute path).

    Training needs a labelled train.csv-style file; ``labelled=False`` reads Kaggle's test.csv
    for prediction (``train_labels`` is then None).
    """
    folder = Path(root).expanduser() / "digit-recognizer"
    if not Path(file).is_absolute() and not folder.is_dir():
        raise DigitlabError(
            f"data folder {folder} does not exist: put Kaggle's train.csv there or point "
            "DIGITLAB_DATA (or data.root) at a folder holding digit-recognizer/"
        )
    images, labels = read_kaggle_csv(folder / file, labelled=labelled)
    if labelled and len(images) < 2:  # the split would answer with an empty range of sizes
        raise DigitlabError(
            f"{folder / file} holds 1 row: training needs at least 2 (one to train on, one to "
            "validate); add rows in Kaggle's layout"
        )
    return DigitData(images, labels, files=(folder / file,))


def _check_root(root: Path) -> None:
    """A download goes into ``root``/MNIST/raw only when ``root`` exists, or is the default
    ``data/`` of the project (a fresh checkout has none): a mistyped ``data.root`` would
    otherwise become a new folder and a download there."""
    from digitlab.config import project_root

    if root.is_dir() or root.resolve() == (project_root() / "data").resolve():
        return
    raise DigitlabError(
        f"data folder {root} does not exist: point DIGITLAB_DATA (or data.root) at the folder "
        f"holding MNIST/raw/, or create {root} to download MNIST into it"
    )


def _check_counts(
    image_path: Path, images: torch.Tensor, label_path: Path, labels: torch.Tensor
) -> None:
    if len(images) != len(labels):
        raise DigitlabError(
            f"{image_path.name} holds {len(images)} images but {label_path.name} holds "
            f"{len(labels)} labels: one of the two files is wrong, replace it"
        )
