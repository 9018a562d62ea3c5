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
from digitlab.data.download import locate
from digitlab.data.idx import idx_dims, read_images, read_labels
from digitlab.data.kaggle import read_kaggle_csv
from digitlab.data.sources import read_data
from digitlab.errors import DigitlabError
from digitlab.serving.mnistify import IMAGE_SUFFIXES, read_digit


def load_images(data: str, root: Path | None) -> tuple[Any, Any]:
    """uint8 images (N, 28, 28) and int64 labels (None when the set has none) of a
    ``conf/data`` option, a ``.csv`` in Kaggle's layout or an IDX images file; the data root is
    this command's (``root``, else the data set's default), never a run's."""
    path = Path(data).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a CSV in Kaggle's layout")
        return read_kaggle_csv(path, labelled=None)  # None: train.csv's layout or test.csv's
    names = config_groups(CONF_DIR)["data"]
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
        twin = path.name.replace("images-idx3", "labels-idx1").removesuffix(".gz") + ".gz"
        labels_file = locate(path.parent, twin)
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


def read_pictures(data: str) -> tuple[Any, Pictures] | None:
    """uint8 images (N, 28, 28), MNIST-like, of the pictures ``data`` names (one picture, a
    folder's or a glob's, sorted) that can be read (N >= 1), and the :class:`Pictures` they came
    from; None when ``data`` names no pictures (a data set, a CSV). One picture that cannot be
    read among others is reported in its row, not fatal; a lone picture that cannot be, a
    folder or glob none of whose can or that holds none, raises its one line."""
    path = Path(data).expanduser()
    if glob.has_magic(data):
        found = sorted(map(Path, glob.glob(str(path))))
    elif path.is_dir():
        found = sorted(path.iterdir())
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise DigitlabError(f"--data {data}: no such file; give a picture of a digit")
        found = [path]
    else:
        return None
    files = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DigitlabError(
            f"--data {data} holds no picture ({', '.join(IMAGE_SUFFIXES)}): give "
            "a folder or glob of digit pictures"
        )
    images, refused = [], {}
    for i, file in enumerate(files):
        try:
            images.append(read_digit(file))
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
    unlabelled) and, for pictures, the :class:`Pictures` they came from (else None)."""
    if data == HOLDOUT:
        return *holdout_images(members, root, trusted), None
    if (read := read_pictures(data)) is not None:
        return read[0], None, read[1]
    return *load_images(data, root), None


def kaggle_caveat(data: str, members: Sequence[tuple[str, Any]]) -> list[str]:
    """One line for ``--data kaggle`` predicted by members ((name, run config) pairs) trained on
    MNIST's files (``load_mnist``, or ``load_idx`` of a folder ``MNIST/...``): Kaggle's test
    images are MNIST images, most of them among MNIST's training ones, so the submission's
    score on Kaggle's leaderboard says little of new digits."""
    if data != "kaggle":
        return []
    on_mnist = []
    for name, config in members:
        source = (config.get("data") or {}).get("source") or {}
        target, folder = str(source.get("_target_", "")), str(source.get("folder", ""))
        if target.endswith(".load_mnist") or (
            target.endswith(".load_idx") and folder.replace("\\", "/").split("/")[0] == "MNIST"
        ):
            on_mnist.append(name)
    if not on_mnist:
        return []
    who = "the run" if len(members) == 1 else f"{len(on_mnist)} of the {len(members)} members"
    return [
        f"{who} trained on MNIST's files, and Kaggle's test images are MNIST images (most of "
        "them among MNIST's training images): the submission's Kaggle score says little of how "
        "it reads new digits; for a score that does, train with data=kaggle"
    ]


# The data keys that decide which rows a run held out, besides its source and split seed.
SPLIT_KEYS = ("val_size", "test_size", "folds", "fold")


def holdout_images(
    members: Sequence[tuple[str, Any]], root: Path | None, trusted: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """uint8 images and labels of the test split that ``members`` ((name, run config) pairs)
    held out in training, cut again as training cut it, from this command's files (``root``,
    else the default data root), never downloaded. Every member must have held out the same
    rows, or the ensemble's accuracy would mix rows some members trained on."""
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
    """(what decides the member's held-out rows, a function that cuts them); one line for a
    config that lacks what the cut needs."""
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
        read = resolve(source["_target_"], ("data source",), trusted)
    except Refused as e:
        raise DigitlabError(
            f"--data holdout: {name}'s run config names data.source.{e.key}, which is not "
            f"trusted code (it {e.reason}): refused, nothing was run"
        ) from None
    if "download" in inspect.signature(read).parameters:  # a holdout never downloads
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


def default_data_root() -> str:
    """The data root a command uses when it is given none: ``$DIGITLAB_DATA``, else the
    project's ``data/`` (what conf/data/*.yaml's ``root`` resolves to)."""
    return os.environ.get("DIGITLAB_DATA") or str(project_root() / "data")


def data_config(name: str, root: Path | str | None) -> Any:
    """``conf/data/<name>.yaml``'s node, composed as training composes it, with ``root`` (when
    given) set on the composed node, never spliced into override text."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        node = compose("config", overrides=[f"data={name}"]).data
    if root:
        OmegaConf.update(node, "root", str(root), merge=False)
    return node
