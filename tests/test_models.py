"""The networks themselves: shapes, their one-line refusals, and batch norm at prediction time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import checkpoint_accuracy
from digitlab.errors import DigitlabError
from digitlab.models import ConvNet, LeNet


@pytest.mark.parametrize("side", [28, 32])
def test_convnet_maps_images_of_its_input_size_to_logits(side):
    net = ConvNet(channels=(4, 8, 8), hidden=(16,), input_size=side)
    assert net(torch.zeros(3, 1, side, side)).shape == (3, 10)
    assert net.classifier[1].in_features == 8 * (side // 8) ** 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConvNet(channels=(4,) * 5), "halves a 28x28 image 5 times, to nothing"),
        (lambda: LeNet(channels=(4, 4, 4)), "shrinks a 28x28 image to nothing"),
    ],
)
def test_impossible_shapes_and_values_are_one_line(make, message):
    with pytest.raises(DigitlabError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dropout=1.0", r"model.dropout=1.0 is invalid: it must be a number in \[0, 1\)"),
        ("model.convs_per_block=0", "model.convs_per_block=0 is invalid: it must be an integer"),
    ],
)
def test_convnet_values_that_cannot_work_are_the_schemas_one_line(make_cfg, override, message):
    from digitlab.config.spec import check_config

    with pytest.raises(DigitlabError, match=message):
        check_config(make_cfg("model=convnet", override))


def test_a_convnet_from_its_checkpoint_predicts_each_image_as_in_any_batch(tmp_path):
    # Batch norm normalises by the batch while training and by its running averages in eval
    # mode: a network rebuilt from a checkpoint (predict, serve, ensembles) must come back in
    # eval mode with those averages, so that a digit's prediction does not depend on the others
    # sent with it.
    from digitlab.training.checkpoints import network_from_checkpoint

    torch.manual_seed(0)
    model = {"_target_": "digitlab.models.ConvNet", "channels": [4, 8], "hidden": [16]}
    data = {"scale": 255.0, "mean": 0.0, "std": 1.0}
    net = ConvNet(channels=(4, 8), hidden=(16,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        x, y = torch.randn(32, 1, 28, 28) + 0.5, torch.randint(0, 10, (32,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save(
        {"state_dict": state, "hyper_parameters": {"config": {"model": model, "data": data}}},
        tmp_path / "best.ckpt",
    )

    rebuilt, _ = network_from_checkpoint(tmp_path / "best.ckpt")
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        together = rebuilt(images)
        alone = torch.cat([rebuilt(images[i : i + 1]) for i in range(8)])
        torch.testing.assert_close(together, net.eval()(images))  # the same network, averages too
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)


def test_a_convnet_trains_through_a_last_batch_of_one_image(make_cfg, tmp_path):
    # 200 training rows in batches of 199: the epoch ends on one image, which batch norm over
    # the batch cannot normalise; it is normalised by the running averages instead.
    from digitlab.training.run import train

    cfg = make_cfg(
        "model=convnet",
        "model.channels=[4,8]",
        "model.hidden=[16]",
        "data.batch_size=199",
        "data.steps_per_call=1",
    )
    result = train(cfg, output_dir=tmp_path)
    assert math.isfinite(result["metrics"]["train/loss"])
    # The logged accuracy is the best checkpoint's, recomputed here without Lightning.
    best = Path(result["best_checkpoint"])
    assert result["metrics"]["test/acc"] == pytest.approx(checkpoint_accuracy(best, cfg), abs=1e-6)
