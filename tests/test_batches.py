"""TensorBatches: the device-resident batch order, its seeding and its sharding across ranks."""

from __future__ import annotations

import pytest
import torch

from digitlab.data.batches import TensorBatches

N = 103  # not a multiple of the batch size, nor of the world size


def order(batches: TensorBatches) -> list[int]:
    """The sample order one pass yields (x holds each sample's index)."""
    return [int(i) for x, _ in batches for i in x]


def make(**kwargs) -> TensorBatches:
    index = torch.arange(N)
    return TensorBatches(index.float(), index, **{"batch_size": 10, **kwargs})


def test_each_sample_once_per_epoch():
    batches = make(shuffle=True, seed=3)
    for epoch in range(3):
        batches.set_epoch(epoch)
        assert sorted(order(batches)) == list(range(N))
    assert len(batches) == 11
    assert [len(y) for _, y in batches] == [10] * 10 + [3]


def test_order_changes_across_epochs_and_repeats_for_the_same_seed_and_epoch():
    first, again = make(shuffle=True, seed=3), make(shuffle=True, seed=3)
    other_seed = make(shuffle=True, seed=4)
    epochs = []
    for epoch in range(3):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        other_seed.set_epoch(epoch)
        assert order(first) == order(again)
        assert order(first) != order(other_seed)
        epochs.append(order(first))
    assert epochs[0] != epochs[1] != epochs[2]


def test_evaluation_keeps_the_file_order():
    assert order(make()) == list(range(N))


@pytest.mark.parametrize("world", [2, 3])
def test_evaluation_shards_partition_the_data(world):
    shards = [order(make(rank=r, world_size=world)) for r in range(world)]
    assert sorted(sum(shards, [])) == list(range(N))  # every sample exactly once


@pytest.mark.parametrize("world", [2, 3])
def test_training_shards_cover_the_data_in_equal_steps(world):
    shards = []
    for rank in range(world):
        batches = make(shuffle=True, seed=1, rank=rank, world_size=world)
        batches.set_epoch(2)
        shards.append(order(batches))
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    assert set(sum(shards, [])) == set(range(N))
    assert len(sum(shards, [])) - N < world  # padded by wrap-around only to even out the shares


def test_batches_stay_on_the_device_of_the_data():
    batches = make(shuffle=True)
    x, y = next(iter(batches))
    assert x.device == batches.x.device and y.device == batches.y.device
