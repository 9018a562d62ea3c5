"""Training-time augmentation and the optional LR schedule."""

from __future__ import annotations

import torch

from digitlab.data.augment import RandomAffine
from digitlab.training.build import build_datamodule, build_module


def test_zero_strength_is_the_identity_and_each_image_moves_on_its_own():
    x = torch.rand(6, 1, 28, 28)
    assert torch.allclose(RandomAffine(0, 0, 0)(x), x, atol=1e-5)
    moved = RandomAffine(degrees=20, translate=0.2, scale=0.1)(x[:1].repeat(6, 1, 1, 1))
    assert moved.shape == (6, 1, 28, 28)
    assert not torch.allclose(moved[0], moved[1])  # one transform per image, not per batch


def test_pixels_moved_in_from_outside_get_the_fill_value():
    x = torch.full((1, 1, 28, 28), 5.0)
    shifted = RandomAffine(degrees=0, translate=0.5, scale=0)(x, fill=-0.4242)
    assert torch.isclose(shifted, torch.tensor(-0.4242), atol=1e-4).any()


def test_augmentation_only_touches_training_batches(make_cfg):
    cfg = make_cfg("model=mlp", "+data.augment._target_=digitlab.data.augment.RandomAffine")
    datamodule = build_datamodule(cfg)
    batch = (torch.rand(4, 1, 28, 28), torch.arange(4))

    class Stage:  # what the data module reads of its Trainer
        training = False
        current_epoch = 0

    datamodule.trainer = Stage()
    assert datamodule.on_after_batch_transfer(batch, 0)[0] is batch[0]
    Stage.training = True
    assert not torch.equal(datamodule.on_after_batch_transfer(batch, 0)[0], batch[0])


def test_scheduler_is_off_by_default_and_cosine_when_chosen(make_cfg):
    assert isinstance(build_module(make_cfg("model=mlp")).configure_optimizers(), torch.optim.SGD)
    module = build_module(make_cfg("model=mlp", "scheduler=cosine", "trainer.max_epochs=4"))
    configured = module.configure_optimizers()
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 4
