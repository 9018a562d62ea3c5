"""What a prediction is made on: a data set of conf/data/, a CSV in Kaggle's layout, an IDX
images file, pictures of digits, or the test rows the runs held out in training
(``--data holdout``)."""

from __future__ import annotations

import glob
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from digitlab.config import CONF_DIR, config_groups, project_root, register_resolvers
from digitlab.config.classes import class_names
from digitlab.config.targets import Refused, build, resolve
from digitlab.data.idx import idx_dims, read_images, read_labels
from digitlab.data.kaggle import read_kaggle_csv
from digitlab.data.sources import read_data
from digitlab.errors import DigitlabError
from digitlab.serving.mnistify import IMAGE_SUFFIXES, read_digit


def data_sets() -> list[str]:
    """The names ``--data`` accepts: the options of the ``data`` config group."""
    return config_groups(CONF_DIR)["data"]


def load_images(data: str, root: Path | None) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) and int64 labels (None when the set has none).

    ``data`` names a ``conf/data`` option, a ``.csv`` in Kaggle's layout or an IDX images file
    (:func:`idx_images`); pictures are :func:`read_pictures`'. The data root is this command's:
    ``root`` (``--root``), else the data set's default (``$DIGITLAB_DATA``, else the project's
    ``data/``), never a run's.
    """
    path = Path(data).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a CSV in Kaggle's layout")
        return read_kaggle_csv(path, labelled=None)  # None: train.csv's layout or test.csv's
    names = data_sets()
    if data not in names and path.is_file() and idx_dims(path) is not None:
        return idx_images(path)
    if data not in names:
        raise DigitlabError(
            f"--data {data!r} is neither a data set ({', '.join(names)}: conf/data/), "
            "holdout (the rows the runs held out), a .csv file in Kaggle's layout, an IDX "
            "images file (…-images-idx3-ubyte, .gz or not), nor pictures (a .png/.jpg file, a "
            "folder of them or a glob such as 'digits/*.png')"
        )
    node = data_config(data, root)
    loaded = read_data(node, which="predict" if node.get("predict") else "source")
    if loaded.test_images is not None:
        return loaded.test_images, loaded.test_labels
    return loaded.train_images, loaded.train_labels


def idx_images(path: Path) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) of an IDX images file, as stored (EMNIST's transposed ones are
    not turned), and the int64 labels of the labels file MNIST's naming puts beside it
    (``…-labels-idx1-ubyte``, compressed or not; None when there is none)."""
    images = read_images(path)
    labels_file = None
    if "images-idx3" in path.name:
        stem = path.name.replace("images-idx3", "labels-idx1").removesuffix(".gz")
        twins = (path.parent / stem, path.parent / f"{stem}.gz")
        labels_file = next((p for p in twins if p.is_file()), None)
    if labels_file is None:
        return images, None
    labels = read_labels(labels_file, limit=None)
    if len(labels) != len(images):
        raise DigitlabError(
            f"{path.name} holds {len(images)} images but {labels_file.name} beside it holds "
            f"{len(labels)} labels: one of the two files is wrong, replace it (or move it away "
            "to predict without labels)"
        )
    return images, labels


@dataclass(frozen=True)
class Pictures:
    """The picture files ``--data`` names, in order, and the one-line reason of each that could
    not be read (by its index in ``files``): its row of ``digits.csv`` says so."""

    files: list[Path]
    unreadable: dict[int, str] = field(default_factory=dict)

    @property
    def readable(self) -> list[int]:
        """The indices of the files that were read, in order: one image each."""
        return [i for i in range(len(self.files)) if i not in self.unreadable]


def read_pictures(data: str, files: list[Path]) -> tuple[Any, Pictures]:
    """uint8 images (N, 28, 28), MNIST-like, of the pictures that can be read (N >= 1), and the
    :class:`Pictures` they came from. One picture that cannot be read among others is reported,
    not fatal; a lone picture that cannot be, or a folder or glob none of whose can, raises
    its one line."""
    images, refused = [], {}
    for i, path in enumerate(files):
        try:
            images.append(read_digit(path))
        except DigitlabError as e:  # not a picture, no digit on it: said in its row
            refused[i] = e
    if not images:
        if len(files) == 1:
            raise refused[0]
        raise DigitlabError(
            f"--data {data}: none of its {len(files)} pictures can be read (the first: "
            f"{refused[0]})"
        )
    unreadable = {i: str(e) for i, e in refused.items()}
    return torch.from_numpy(np.stack(images)), Pictures(files, unreadable)


def picture_files(data: str) -> list[Path] | None:
    """The picture files ``--data`` names, sorted: one picture (``.png``, ``.jpg``, ...), a
    folder's pictures or a glob's; None when ``data`` names none of these (a data set, a CSV).
    Raises DigitlabError when a folder or glob holds no picture, or a picture is missing."""

    def pictures(paths) -> list[Path]:
        return sorted(
            p for p in map(Path, paths) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )

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
        raise DigitlabError(
            f"--data {data} holds no picture ({', '.join(IMAGE_SUFFIXES)}): give "
            "a folder or glob of digit pictures"
        )
    return found


def data_name(data: str) -> str:
    """A short name for ``--data`` in file names: the data set, the CSV's stem, the pictures'
    folder (a glob's ``*`` never ends up in a file name)."""
    path = Path(data).expanduser()
    if glob.has_magic(data):
        head = re.split(r"[*?\[]", str(path), maxsplit=1)[0]
        folder = Path(head) if head.endswith("/") else Path(head).parent
        return folder.resolve().name or "pictures"
    return path.resolve().name if path.is_dir() else path.stem


# ``--data holdout``: the labelled test split the runs themselves held out.
HOLDOUT = "holdout"


def images_for(
    data: str, root: Path | None, members: Sequence[tuple[str, Any]], trusted: tuple[str, ...] = ()
) -> tuple[Any, Any, Pictures | None]:
    """The images to predict for ``members`` ((name, run config) pairs), their labels (None:
    unlabelled) and, for pictures, the :class:`Pictures` they came from (else None):
    ``--data holdout`` rebuilds the test split they held out (:func:`holdout_images`), pictures
    are read by :func:`read_pictures`, any other ``data`` by :func:`load_images`."""
    if data == HOLDOUT:
        return *holdout_images(members, root, trusted), None
    if (files := picture_files(data)) is not None:
        images, pictures = read_pictures(data, files)
        return images, None, pictures
    return *load_images(data, root), None


def kaggle_caveat(data: str, members: Sequence[tuple[str, Any]]) -> list[str]:
    """One line for ``--data kaggle`` predicted by members ((name, run config) pairs) trained on
    MNIST's files: Kaggle's test images are MNIST images, most of them among MNIST's training
    ones, so the submission's score on Kaggle's leaderboard says little of new digits."""
    if data != "kaggle":
        return []
    on_mnist = [name for name, config in members if trained_on_mnist(config)]
    if not on_mnist:
        return []
    who = "the run" if len(members) == 1 else f"{len(on_mnist)} of the {len(members)} members"
    return [
        f"{who} trained on MNIST's files, and Kaggle's test images are MNIST images (most of "
        "them among MNIST's training images): the submission's Kaggle score says little of how "
        "it reads new digits; for a score that does, train with data=kaggle"
    ]


def trained_on_mnist(config: Any) -> bool:
    """Whether a run config's data source reads MNIST's files (``load_mnist``, or an IDX
    source whose folder is ``MNIST/...``)."""
    data = config.get("data") if isinstance(config, Mapping) else None
    source = data.get("source") if isinstance(data, Mapping) else None
    if not isinstance(source, Mapping):
        return False
    target = str(source.get("_target_", ""))
    folder = str(source.get("folder", "")).replace("\\", "/")
    return target.endswith(".load_mnist") or (
        target.endswith(".load_idx") and folder.split("/")[0] == "MNIST"
    )


# The data keys that decide which rows a run held out, besides its source and split seed.
SPLIT_KEYS = ("val_size", "test_size", "folds", "fold")


def holdout_images(
    members: Sequence[tuple[str, Any]], root: Path | None, trusted: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """uint8 images and labels of the test split that ``members`` ((name, run config) pairs)
    held out in training, cut again from each run's data source, sizes and split seed as
    training cut it: for Kaggle's train.csv with ``data.test_size``, rows no member trained on
    (without it, the validation rows that picked each member's best epoch). Every member must
    have held out the same rows, or the ensemble's accuracy would mix rows some members trained
    on. The files are this command's: those under ``root`` (``--root``), else under the data
    sets' default root (``$DIGITLAB_DATA``, else the project's ``data/``), never downloaded."""
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
    """(what decides the member's held-out rows, a function that cuts them): its data source
    (a parsed recipe: which reader and files, no place), read from this command's ``root``
    without downloading; one line for a config that lacks what the cut needs."""
    # lazy: Lightning, 8 s after torch, which a prediction needs for --data holdout only
    from digitlab.data.datamodule import DigitDataModule

    data = config.get("data") if isinstance(config, Mapping) else None
    source = data.get("source") if isinstance(data, Mapping) else None
    if (
        not isinstance(data, Mapping)
        or not isinstance(source, Mapping)
        or "val_size" not in data
        or "seed" not in config
    ):
        raise DigitlabError(
            f"--data holdout: {name}'s run config lacks data.source, data.val_size or seed, so "
            "its held-out rows cannot be cut again: pass a data set with --data instead"
        )
    source = {k: v for k, v in source.items() if k != "_partial_"}
    data_root = str(root) if root is not None else default_data_root()
    try:
        takes = _parameters(source["_target_"], trusted)
    except Refused as e:
        raise DigitlabError(
            f"--data holdout: {name}'s run config names data.source.{e.key}, which is not "
            f"trusted code (it {e.reason}): refused, nothing was run"
        ) from None
    if "download" in takes:  # a holdout never downloads
        source["download"] = False
    split_seed = config["seed"] if data.get("split_seed") is None else data["split_seed"]
    recipe = repr(
        (sorted(source.items()), data_root, *(data.get(k) for k in SPLIT_KEYS), split_seed)
    )

    def cut() -> tuple[Any, Any]:
        try:
            datamodule = DigitDataModule(
                source=build(source, "data source", trusted, path="data.source.", _partial_=True),
                root=data_root,
                classes=class_names(data.get("classes", 10)),
                val_size=data["val_size"],
                test_size=data.get("test_size"),
                seed=config["seed"],
                split_seed=split_seed,
                folds=data.get("folds"),
                fold=data.get("fold", 0),
            )
            return datamodule.split()["test"]
        except DigitlabError as e:
            raise DigitlabError(f"--data holdout, {name}: {e}") from None

    return recipe, cut


def _parameters(target: str, trusted: tuple[str, ...]) -> tuple[str, ...]:
    """The argument names of the data source ``target`` names, once it passes the allow-list."""
    return tuple(inspect.signature(resolve(target, ("data source",), trusted)).parameters)


def default_data_root() -> str:
    """The data root a command uses when it is given none: ``$DIGITLAB_DATA``, else the
    project's ``data/`` (what conf/data/*.yaml's ``root`` resolves to)."""
    return os.environ.get("DIGITLAB_DATA") or str(project_root() / "data")


def data_config(name: str, root: Path | str | None) -> Any:
    """``conf/data/<name>.yaml``'s node, composed as training composes it, with ``root`` (when
    given) as its data root: set on the composed node, never spliced into override text."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        node = compose("config", overrides=[f"data={name}"]).data
    if root:
        OmegaConf.update(node, "root", str(root), merge=False)
    return node
