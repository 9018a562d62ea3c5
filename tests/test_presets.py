"""Every preset composes to exactly the tutorial setup it claims to reproduce."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from digitlab.config import CONF_DIR

# preset -> {dotted key: value}; "model" and "data" are the chosen networks and sources.
EXPECTED = {
    "mxnet_mlp": {
        "model._target_": "digitlab.models.MLP", "model.hidden": [128, 64],
        "model.activation": "relu", "data.source._target_": "digitlab.data.sources.load_mnist",
        "optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.1, "optimizer.momentum": 0.0,
        "optimizer.weight_decay": 0.0, "data.batch_size": 100, "trainer.max_epochs": 10,
        "data.scale": 255.0, "data.mean": 0.0, "data.std": 1.0, "model.input_size": 28,
    },
    "mxnet_lenet": {
        "model._target_": "digitlab.models.LeNet", "model.channels": [20, 50],
        "model.hidden": [500], "model.activation": "tanh", "model.kernel_size": 5,
        "optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.1, "optimizer.momentum": 0.0,
        "data.batch_size": 100, "trainer.max_epochs": 10, "data.scale": 255.0,
        "data.mean": 0.0, "data.std": 1.0, "model.input_size": 28,
    },
    "mxnet_jl_kaggle": {
        "data.source._target_": "digitlab.data.sources.load_kaggle", "data.val_size": 0.2,
        "data.scale": 80.0, "data.mean": 0.4176, "data.std": 1.0,
        "model._target_": "digitlab.models.LeNet", "model.channels": [12, 25],
        "model.hidden": [100], "model.activation": "tanh", "optimizer._target_": "torch.optim.SGD",
        "optimizer.lr": 0.05, "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-5,
        "data.batch_size": 1000, "trainer.max_epochs": 19,
    },
    "flux_mlp": {
        "model._target_": "digitlab.models.MLP", "model.hidden": [32],
        "model.activation": "sigmoid", "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 3e-4, "data.batch_size": 256, "trainer.max_epochs": 30,
        "data.scale": 255.0, "data.mean": 0.0, "data.std": 1.0,
    },
    "mindspore_lenet5": {
        "model._target_": "digitlab.models.LeNet", "model.channels": [6, 16],
        "model.hidden": [120, 84], "model.activation": "relu", "model.input_size": 32,
        "data.scale": 255.0, "data.mean": 0.1307, "data.std": 0.3081,
        "optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.01, "optimizer.momentum": 0.9,
        "data.batch_size": 32, "trainer.max_epochs": 3,
    },
}
UNTOUCHED = {"scheduler": None, "data.augment": None}


def compose_preset(name: str, *overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", [f"experiment={name}", *overrides], return_hydra_config=hydra)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_composes_to_the_tutorial_setup(preset):
    cfg = compose_preset(preset)
    for key, value in {**EXPECTED[preset], **UNTOUCHED}.items():
        actual = OmegaConf.select(cfg, key)
        actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
        assert actual == value, f"{preset}: {key} = {actual!r}, expected {value!r}"


def test_best_adds_augmentation_a_schedule_and_width():
    cfg = compose_preset("best")
    assert cfg.data.augment._target_ == "digitlab.data.augment.RandomAffine"
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert cfg.scheduler.T_max == cfg.trainer.max_epochs
    assert list(cfg.model.channels) == [32, 64] and cfg.optimizer.nesterov


def test_search_preset_searches_the_named_hyperparameters():
    cfg = compose_preset("search", "search.hidden=64", "search.filters.0=8", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {
        "optimizer.lr", "data.batch_size", "optimizer.momentum", "optimizer.weight_decay",
        "search.filters.0", "search.filters.1", "search.hidden",
    }
    assert list(cfg.model.hidden) == [64]  # the sampled width reaches the network
    assert list(cfg.model.channels) == [8, 50]


def test_a_preset_value_can_still_be_overridden():
    assert compose_preset("mxnet_mlp", "optimizer.lr=0.5").optimizer.lr == 0.5


def test_fast_trains_a_narrow_relu_lenet_under_a_per_step_one_cycle():
    cfg = compose_preset("fast")
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert cfg.scheduler.interval == "step" and cfg.scheduler.max_lr == cfg.optimizer.lr
    assert list(cfg.model.channels) == [8, 16] and cfg.model.activation == "relu"
    assert cfg.figures.enabled is False and cfg.data.source._target_.endswith("load_mnist")
