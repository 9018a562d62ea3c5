"""Batches cut by index from tensors that already sit on the training device."""

from __future__ import annotations

import math

import torch


class TensorBatches:
    """An iterable of ``(x, y)`` batches over in-memory tensors; a drop-in for a DataLoader.

    With ``shuffle`` each epoch draws a new permutation from a generator seeded with
    ``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted one would.
    Lightning calls :meth:`set_epoch` (found through ``.sampler``) at the start of every epoch,
    as it does for a DistributedSampler. With ``world_size > 1`` every rank takes its own
    interleaved share of the order, so each sample is seen once per epoch across ranks. Training
    shares are padded by wrap-around to equal length (as DistributedSampler does, so every rank
    takes the same number of steps); evaluation shares are not, so no sample counts twice.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Lightning looks for set_epoch on `.sampler` and inspects `.batch_sampler`, as on a
        # DataLoader.
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = len(self.y)
        if self.shuffle:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        """Sample indices for this rank and epoch, or None for the plain 0..N-1 order."""
        n = len(self.y)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.shuffle:
                order = torch.cat([order, order[: self.num_samples * self.world_size - n]])
            order = order[self.rank :: self.world_size]
        return order.to(self.x.device, non_blocking=True)

    def __iter__(self):
        order = self._order()
        if order is None:  # contiguous slices are views: no copy at all
            for start in range(0, len(self.y), self.batch_size):
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            return
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x.index_select(0, index), self.y.index_select(0, index)
