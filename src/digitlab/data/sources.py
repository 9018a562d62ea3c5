"""Data sources: each loads a data set from disk into plain tensors, nothing else."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.config.classes import class_names
from digitlab.config.targets import build, buildable
from digitlab.data.download import default_mirrors, download_files, locate, missing_files
from digitlab.data.idx import read_images, read_labels
from digitlab.data.kaggle import read_kaggle_csv
from digitlab.errors import DigitlabError

if TYPE_CHECKING:  # loading and validating a file needs no torch until it is valid
    import torch


@dataclass
class DigitData:
    """Decoded images (uint8, (N, 28, 28), upright) and labels (int64, (N,)).

    ``test_*`` is None when the source has no labelled test set of its own (Kaggle);
    ``train_labels`` is None only for an unlabelled set read for prediction; ``files`` may be
    empty for a source that reads no files.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor | None
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    files: tuple[Path, ...] = ()  # the files it was read from: the run's data lineage


def read_data(
    data: Mapping[str, Any], trusted: Iterable[str] = (), which: str = "source"
) -> DigitData:
    """The data set that the ``data`` node's ``which`` source (``source``, or ``predict``) reads
    from the node's ``root``, without torch until the files have passed their checks."""
    from hydra.errors import InstantiationException

    try:
        read = build(data[which], "data source", trusted, path=f"data.{which}.", _partial_=True)
    except InstantiationException as e:  # Hydra wraps what the source raises; unwrap ours
        if isinstance(e.__cause__, DigitlabError):
            raise e.__cause__ from None
        raise
    root = data.get("root")
    return read() if root is None else read(root=root)


@buildable("data source")
def load_mnist(
    root: str | Path, download: bool = True, mirrors: list[str] | None = None
) -> DigitData:
    """MNIST from ``<root>/MNIST/raw/`` by torchvision's file table: the source of runs stored
    before conf/data/mnist.yaml named its files (it now names :func:`load_idx`)."""
    from torchvision.datasets import MNIST

    return load_idx(
        root, "MNIST/raw", dict(zip(IDX_PARTS, MNIST.resources, strict=True)), mirrors, download
    )


# The four files of a data set in MNIST's IDX layout, by the part each holds.
IDX_PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@buildable("data source")
def load_idx(
    root: str | Path,
    folder: str,
    files: Mapping[str, Sequence[str | None]],
    mirrors: Sequence[str] | None = None,
    download: bool = True,
    transpose: bool = False,
    archive: str | None = None,
    archive_md5: str | None = None,
    classes: int | Sequence[str] | None = None,
) -> DigitData:
    """A data set in MNIST's IDX layout (MNIST, Fashion-MNIST, KMNIST, EMNIST, ...) from
    ``<root>/<folder>/``; missing files are downloaded first when allowed. Its arguments are
    commented in ``conf/data/*.yaml``: ``files`` maps each of :data:`IDX_PARTS` to ``[file name,
    md5]`` (an md5 of null: never downloaded by itself, only from ``archive``); ``mirrors=None``
    takes those of the torchvision.datasets class the folder's first part names; ``transpose``
    turns column-by-column images (EMNIST's) upright; ``archive`` without ``archive_md5`` is only
    named by the error; ``classes=None`` leaves the labels to the data module.
    """
    table = _file_table(files, _check_folder(folder))
    raw_dir = Path(root).expanduser() / folder
    if missing := missing_files(raw_dir, table):
        fetch = (download, mirrors, archive, archive_md5)
        _get_missing(Path(root).expanduser(), folder, table, missing, *fetch)
    paths = [locate(raw_dir, file) or raw_dir / file for file, _ in table]
    limit = None if classes is None else len(class_names(classes))
    train_images, train_labels = read_images(paths[0]), read_labels(paths[1], limit)
    test_images, test_labels = read_images(paths[2]), read_labels(paths[3], limit)
    _check_counts(paths[0], train_images, paths[1], train_labels)
    _check_counts(paths[2], test_images, paths[3], test_labels)
    if transpose:  # stored column by column: each image turned back upright, once, here
        train_images = train_images.transpose(1, 2).contiguous()
        test_images = test_images.transpose(1, 2).contiguous()
    return DigitData(train_images, train_labels, test_images, test_labels, tuple(paths))


def _get_missing(
    root: Path,
    folder: str,
    table: list[tuple[str, str]],
    missing: list[str],
    download: bool,
    mirrors: Sequence[str] | None,
    archive: str | None,
    archive_md5: str | None,
) -> None:
    """Download the ``missing`` files of ``table`` into ``root/folder`` when ``download`` allows
    it, else one line saying where they come from."""
    name, raw_dir, listed = folder.split("/")[0], root / folder, ", ".join(missing)
    packed = (archive, archive_md5) if archive and archive_md5 else None
    unchecked = [] if packed else [file for file, md5 in table if not md5]
    by_hand = f"download {archive}, unzip it and put {listed} in {raw_dir}/" if archive else ""
    elsewhere = f"point DIGITLAB_DATA (or data.root) at a folder holding {folder}/"
    if not download and (unchecked or archive):
        also = "" if unchecked else ", set data.source.download=true"
        raise DigitlabError(
            f"{name} files missing in {raw_dir}: {listed}; "
            f"{by_hand or f'copy {listed} into {raw_dir}/'}{also}, or {elsewhere}"
        )
    if not download and not raw_dir.is_dir():
        raise DigitlabError(
            f"data folder {raw_dir} does not exist: point DIGITLAB_DATA (or data.root) at the "
            f"folder holding {folder}/, or set data.source.download=true"
        )
    if not download:
        raise DigitlabError(
            f"{name} files missing in {raw_dir}: {listed}; copy them there, set "
            f"data.source.download=true, or {elsewhere}"
        )
    if unchecked:
        which = "its files" if len(unchecked) == len(table) else ", ".join(unchecked)
        raise DigitlabError(
            f"data.source.download=true cannot fetch {name}: data.source.files gives no md5 for "
            f"{which} (a file without one is never fetched); "
            f"{by_hand or f'copy {listed} into {raw_dir}/'}, or {elsewhere}"
        )
    _check_root(root, folder)
    urls = [] if packed else default_mirrors(name) if mirrors is None else list(mirrors)
    if not packed and not urls:  # file by file: the mirrors given, else torchvision's for the set
        why = (
            "is empty" if mirrors is not None else f"is null and torchvision.datasets has no {name}"
        )
        raise DigitlabError(
            f"data.source.download=true cannot fetch {name}: data.source.mirrors {why}; "
            f"copy {listed} into {raw_dir}/, give data.source.mirrors, or {elsewhere}"
        )
    download_files(raw_dir, table, urls, packed, label=name)


def _check_folder(folder: str) -> str:
    """``folder`` if it stays under the data root (relative, no ``..``), else one line."""
    parts = str(folder).replace("\\", "/").split("/")
    if not folder or str(folder).startswith(("/", "~")) or ".." in parts or ":" in parts[0]:
        raise DigitlabError(
            f"data.source.folder={folder!r} leaves the data root: give a folder under it, "
            "e.g. FashionMNIST/raw (point data.root elsewhere to read other folders)"
        )
    return str(folder)


def _file_table(files: Mapping[str, Sequence[str | None]], folder: str) -> list[tuple[str, str]]:
    """``files`` as ``[(file name, md5 or "")]`` in :data:`IDX_PARTS`' order; one line for a
    table that lacks a part or whose entry is not ``[name, md5]``."""
    table = []
    for part in IDX_PARTS:
        entry = files.get(part) if isinstance(files, Mapping) else None
        if (
            isinstance(entry, str | bytes)
            or not isinstance(entry, Sequence)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not entry[0]
            or any(c in entry[0] for c in "/\\")
            or entry[0] in (".", "..")
        ):
            raise DigitlabError(
                f"data.source.files.{part}={entry!r} is invalid: give [file name, md5] (md5 "
                f"null: never downloaded) of the {part.replace('_', ' ')} in {folder}/"
            )
        table.append((entry[0], str(entry[1] or "")))
    return table


@buildable("data source")
def load_kaggle(
    root: str | Path,
    file: str = "train.csv",
    labelled: bool = True,
    classes: int | Sequence[str] = 10,
) -> DigitData:
    """Kaggle's ``<root>/digit-recognizer/<file>`` (``file`` may be an absolute path).

    Training needs a labelled train.csv-style file; ``labelled=False`` reads Kaggle's test.csv
    for prediction (``train_labels`` is then None). ``classes``: the data set's classes (a
    count or their names); a label outside them is refused, naming its row.
    """
    folder = Path(root).expanduser() / "digit-recognizer"
    if not Path(file).is_absolute() and not folder.is_dir():
        raise DigitlabError(
            f"data folder {folder} does not exist: put Kaggle's train.csv there or point "
            "DIGITLAB_DATA (or data.root) at a folder holding digit-recognizer/"
        )
    count = len(class_names(classes))
    images, labels = read_kaggle_csv(folder / file, labelled=labelled, classes=count)
    if labelled and len(images) < 2:  # the split would answer with an empty range of sizes
        raise DigitlabError(
            f"{folder / file} holds 1 row: training needs at least 2 (one to train on, one to "
            "validate); add rows in Kaggle's layout"
        )
    return DigitData(images, labels, files=(folder / file,))


def _check_root(root: Path, folder: str = "MNIST/raw") -> None:
    """A download goes into ``root``/``folder`` only when ``root`` exists, or is the default
    ``data/`` of the project (a fresh checkout has none): a mistyped ``data.root`` would
    otherwise become a new folder and a download there."""
    from digitlab.config import project_root

    if root.is_dir() or root.resolve() == (project_root() / "data").resolve():
        return
    raise DigitlabError(
        f"data folder {root} does not exist: point DIGITLAB_DATA (or data.root) at the folder "
        f"holding {folder}/, or create {root} to download {folder.split('/')[0]} into it"
    )


def _check_counts(
    image_path: Path, images: torch.Tensor, label_path: Path, labels: torch.Tensor
) -> None:
    if len(images) != len(labels):
        raise DigitlabError(
            f"{image_path.name} holds {len(images)} images but {label_path.name} holds "
            f"{len(labels)} labels: one of the two files is wrong, replace it"
        )
