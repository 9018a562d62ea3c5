"""Training-time augmentation and the optional LR schedule."""

from __future__ import annotations

import torch

from digitlab.data.augment import TTA_MOVES, RandomAffine, averaged_probabilities, move
from digitlab.models import LeNet
from digitlab.training.build import build_datamodule, build_module


def test_zero_strength_is_the_identity_and_each_image_moves_on_its_own():
    x = torch.rand(6, 1, 28, 28)
    assert torch.allclose(RandomAffine(0, 0, 0)(x), x, atol=1e-5)
    moved = RandomAffine(degrees=20, translate=0.2, scale=0.1)(x[:1].repeat(6, 1, 1, 1))
    assert moved.shape == (6, 1, 28, 28)
    assert not torch.allclose(moved[0], moved[1])  # one transform per image, not per batch


def test_pixels_moved_in_from_outside_get_the_fill_value():
    x = torch.full((1, 1, 28, 28), 5.0)
    # Seeded: an unseeded draw could shift by less than half a pixel and move nothing in.
    shifts = RandomAffine(degrees=0, translate=0.5, scale=0)
    shifted = shifts(x.repeat(4, 1, 1, 1), fill=-0.4242, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(shifted, torch.tensor(-0.4242), atol=1e-4).any()


def test_a_quarter_turn_turns_the_picture_counter_clockwise():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 2, 20:26] = 1.0  # a bar in the top right, pointing right
    turned = move(x, angle=90)
    # Turned counter-clockwise as seen, the bar is in the top left, pointing up.
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert turned[0, 0, 2:8, 2].sum() > 5.9


def test_a_shift_moves_right_and_down_by_whole_pixels_filling_the_gap():
    x = torch.rand(1, 1, 28, 28)
    moved = move(x, shift_x=3, shift_y=2, fill=-1.0)
    assert torch.allclose(moved[..., 2:, 3:], x[..., :-2, :-3], atol=1e-5)
    assert torch.allclose(moved[..., :2, :], torch.tensor(-1.0), atol=1e-5)
    assert torch.allclose(moved[..., :, :3], torch.tensor(-1.0), atol=1e-5)


def test_a_45_degree_shear_slides_each_row_by_its_distance_from_the_centre():
    x = torch.rand(1, 1, 27, 27)  # odd side: the centre row is row 13
    sheared = move(x, shear=45)
    for row in (5, 13, 20):
        offset = row - 13  # rows below the centre move right, rows above move left
        if offset >= 0:
            expected, got = x[0, 0, row, : 27 - offset], sheared[0, 0, row, offset:]
        else:
            expected, got = x[0, 0, row, -offset:], sheared[0, 0, row, : 27 + offset]
        assert torch.allclose(got, expected, atol=1e-4), row


def test_a_displacement_field_moves_where_each_pixel_reads_from():
    x = torch.rand(2, 1, 28, 28)
    field = torch.zeros(2, 2, 28, 28)
    field[:, 0] = 2.0  # every pixel reads 2 pixels to its right: the picture moves left
    assert torch.allclose(move(x, displacement=field), move(x, shift_x=-2), atol=1e-5)


def test_elastic_distortion_moves_pixels_by_about_its_strength_each_image_its_own_way():
    # On a left-to-right ramp, value = column: how far a pixel's value changes is how far
    # sideways it reads from, in pixels (bilinear sampling is exact on a ramp).
    ramp = torch.arange(28.0).expand(8, 1, 28, 28).clone()
    bent = RandomAffine(degrees=0, translate=0, scale=0, elastic=2.0)(
        ramp, generator=torch.Generator().manual_seed(0)
    )
    sideways = (bent - ramp)[..., 6:-6, 6:-6]  # away from the borders' fill
    assert not torch.allclose(sideways[0], sideways[1])
    # The field's RMS over both directions is 2 pixels: about 2 / sqrt(2) sideways.
    assert 0.8 < sideways.square().mean().sqrt() < 2.2


def test_tta_over_moves_that_move_nothing_is_the_plain_prediction():
    torch.manual_seed(0)
    net = LeNet().eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        plain = net(x).softmax(dim=1)
        still = averaged_probabilities(net, x, ({}, {"angle": 0.0}, {"shift_x": 0.0}), fill=-0.4)
        moved = averaged_probabilities(net, x, TTA_MOVES, fill=-0.4)
    assert torch.allclose(still, plain, atol=1e-5)
    assert torch.allclose(moved.sum(dim=1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(moved, plain, atol=1e-4)


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
