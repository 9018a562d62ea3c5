"""One data module for every source: seeded split, device-resident normalised tensors, batches.

A data set's YAML (``conf/data/*.yaml``) is this class's configuration: its keys are the
constructor's arguments, and ``_target_`` names the class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from digitlab.config.classes import class_names
from digitlab.config.spec import final_fit
from digitlab.config.targets import buildable
from digitlab.data.batches import TensorBatches
from digitlab.data.sources import DigitData
from digitlab.errors import DigitlabError


def holdout_count(n: int, size: Any, key: str) -> int:
    """How many of ``n`` rows a holdout of ``size`` takes: an int is a count, a float a fraction
    (the schema, ``config.spec.DataSpec``, has checked its type and range)."""
    count = round(n * size) if isinstance(size, float) else size
    if not 1 <= count < n:
        raise DigitlabError(f"{key}={size} leaves no data to train on or hold out: use 1..{n - 1}")
    return count


def prepare(
    images: torch.Tensor, device: torch.device, scale: float, mean: float, std: float, size: int
) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, size, size) on ``device``: x / scale, then
    (x - mean) / std."""
    x = images.to(device).unsqueeze(1).float().div_(scale).sub_(mean).div_(std)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()


def fold_split(rows: torch.Tensor, folds: int, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(validation rows, training rows)`` of fold ``fold`` of ``folds``: the rows cut into
    ``folds`` consecutive, near-equal parts (sizes differ by at most one)."""
    if not 2 <= folds <= len(rows) or not 0 <= fold < folds:
        raise DigitlabError(
            f"data.folds={folds}, data.fold={fold} cannot split {len(rows)} training rows: "
            f"use 2 <= data.folds <= {len(rows)} and 0 <= data.fold < data.folds"
        )
    parts = torch.tensor_split(rows, folds)
    return parts[fold], torch.cat([p for i, p in enumerate(parts) if i != fold])


@buildable("data module")
class DigitDataModule(L.LightningDataModule):
    """Loads a source once, splits it with the run's seed and serves batches from the device.

    Its arguments are the keys of ``conf/data/*.yaml`` (each commented there). What they do
    beyond their comment: ``source`` is called as ``source(root=root)``, or
    ``source()`` when ``root`` is None; ``val_size=0`` is a final fit (:func:`final_fit`: no
    validation, no test holdout carved); with ``folds`` the training rows (after any test
    holdout) are cut into disjoint seeded folds and ``val_size`` is unused; ``seed`` seeds the
    batch order, the augmentation and, unless ``split_seed`` does, the split (a fixed split lets
    an ensemble of a seed sweep be scored on rows none of its members trained on);
    ``augment(x, fill=background, generator=...)`` moves every training batch on its device; a
    training batch holds ``batch_size * steps_per_call`` samples, which the module cuts into
    optimizer steps (one step per batch under DDP, whose wrapper syncs gradients once per
    forward call).
    """

    def __init__(
        self,
        source: Callable[..., DigitData],
        root: str | Path | None = None,
        classes: int | Sequence[str] = 10,
        val_size: float | int = 5000,
        test_size: float | int | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        scale: float = 255.0,
        mean: float = 0.0,
        std: float = 1.0,
        resize: int = 28,
        seed: int = 0,
        split_seed: int | None = None,
        augment: Callable[..., torch.Tensor] | None = None,
        steps_per_call: int = 1,
        folds: int | None = None,
        fold: int = 0,
        predict: Callable[..., DigitData] | None = None,
    ) -> None:
        super().__init__()
        del predict  # data.predict: the set digitlab-predict reads (jobs/inputs.py), not a split
        self.source, self.root = source, root
        self.classes = class_names(classes)
        self.val_size, self.test_size = val_size, test_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.scale, self.mean, self.std, self.resize = scale, mean, std, resize
        self.seed = seed
        self.split_seed = seed if split_seed is None else split_seed
        self.augment = augment
        self.steps_per_call = steps_per_call
        self.folds, self.fold = folds, fold
        self.raw: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # uint8 images, labels (CPU)
        self.files: tuple = ()  # the source's files, once split() has read them
        # {"train", "val", "test"} -> indices into the source's training rows, once split() has
        # cut them ("test" empty where the source has its own test set or none is carved)
        self.rows: dict[str, torch.Tensor] = {}
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # model input, on device
        self._generator: torch.Generator | None = None
        self._augment_epoch: tuple[int, torch.device] | None = None

    def split(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Decode once and split: {"train", "val", "test"} -> (uint8 images, int64 labels)."""
        if self.raw:
            return self.raw
        data = self.read(self.source)
        self.files = data.files
        images, labels = data.train_images, data.train_labels
        # The readers refuse a training file without labels (Kaggle's test.csv) in one line.
        assert labels is not None, "training data without labels"
        val_idx, test_idx, train_idx = self._indices(len(labels), data.test_images is None)
        self.rows = {"train": train_idx, "val": val_idx, "test": test_idx}
        self.raw["train"] = images[train_idx], labels[train_idx]
        self.raw["val"] = images[val_idx], labels[val_idx]
        if data.test_images is not None:
            assert data.test_labels is not None, "a test split comes with its labels"
            self.raw["test"] = data.test_images, data.test_labels
        elif len(test_idx) or not len(val_idx):  # a final fit has nothing to test on
            self.raw["test"] = images[test_idx], labels[test_idx]
        else:  # Kaggle: its test.csv has no labels, so the labelled holdout is the test set
            self.raw["test"] = self.raw["val"]
        return self.raw

    def read(self, source: Callable[..., DigitData]) -> DigitData:
        """``source``'s data set from ``root``, its labels checked against the classes."""
        data = source() if self.root is None else source(root=self.root)
        for labels in (data.train_labels, data.test_labels):
            if labels is not None and len(labels) and int(labels.max()) >= len(self.classes):
                raise DigitlabError(
                    f"the data set has a label {int(labels.max())} but data.classes names "
                    f"{len(self.classes)} classes (labels 0..{len(self.classes) - 1}): list every "
                    "class in data.classes"
                )
        return data

    def _indices(self, n: int, carve_test: bool) -> tuple[torch.Tensor, ...]:
        """Seeded ``(val, test, train)`` row indices; ``test`` is empty unless carved out."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        carve_test = carve_test and self.test_size is not None
        if self.folds:  # test rows first, then the folds over all the others
            n_test = holdout_count(n, self.test_size, "data.test_size") if carve_test else 0
            val_idx, train_idx = fold_split(order[n_test:], self.folds, self.fold)
            return val_idx, order[:n_test], train_idx
        if final_fit(self.val_size, self.folds):
            empty = order[:0]
            return empty, empty, order
        n_val = holdout_count(n, self.val_size, "data.val_size")
        n_test = holdout_count(n - n_val, self.test_size, "data.test_size") if carve_test else 0
        return order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        for name, (images, labels) in self.split().items():
            x = self._prepare(images)
            self.tensors[name] = x, labels.to(x.device)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as the model's input, on the trainer's device (the CPU without one)."""
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        return prepare(images, device, self.scale, self.mean, self.std, self.resize)

    def _batches(self, name: str, batch_size: int, shuffle: bool) -> TensorBatches:
        x, y = self.tensors[name]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatches(
            x, y, batch_size, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world
        )

    def train_dataloader(self) -> TensorBatches:
        world = self.trainer.world_size if self.trainer is not None else 1
        steps = self.steps_per_call if world == 1 else 1
        return self._batches("train", self.batch_size * steps, shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment is None or self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        epoch = self.trainer.current_epoch
        if self._augment_epoch != (epoch, x.device):
            # Seeded per epoch, as the batch order is: a run resumed at an epoch boundary draws
            # exactly the transforms an uninterrupted one would.
            self._generator = torch.Generator(x.device).manual_seed(
                self.seed * 1_000_003 + epoch + 1
            )
            self._augment_epoch = (epoch, x.device)
        fill = -self.mean / self.std  # a black pixel, normalised
        return self.augment(x, fill=fill, generator=self._generator), y
