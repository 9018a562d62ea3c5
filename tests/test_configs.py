"""Every option of every config group composes, passes the value checks and builds what it
describes: a new option under conf/ is tested here without a test edit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from digitlab.config import CONF_DIR, config_groups, register_resolvers
from digitlab.config.spec import check_config
from digitlab.config.targets import build, trusted_targets
from digitlab.training.build import build_callbacks

OPTIONS = [
    (group, option) for group, options in config_groups(CONF_DIR).items() for option in options
]


def composed(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option):
    cfg = composed(f"{group}={option}")
    check_config(cfg)
    trusted = trusted_targets(cfg)
    net = build(cfg.model, "network", trusted)
    side = cfg.model.get("input_size", 28)
    assert net(torch.zeros(2, 1, side, side)).shape == (2, 10)
    parameters = list(net.parameters())
    optimizer = build(cfg.optimizer, "optimizer", trusted)(parameters)
    if cfg.get("scheduler"):
        settings = {k: v for k, v in dict(cfg.scheduler).items() if k != "interval"}
        factory = build(settings, "scheduler", trusted)
        is_one_cycle = "OneCycle" in str(cfg.scheduler._target_)
        factory(optimizer, **({"total_steps": 10} if is_one_cycle else {}))
    loader = build(cfg.data.source, "data source", trusted, _partial_=True)
    assert callable(loader)  # reading the files is the data tests' business
    if cfg.data.get("augment"):
        build(cfg.data.augment, "augmentation", trusted)
    callbacks = build_callbacks(cfg)
    assert all(isinstance(c, L.Callback) for c in callbacks)
    settings = {k: v for k, v in dict(cfg.trainer).items() if k != "accelerator"}
    L.Trainer(
        **settings, accelerator="cpu", logger=False, callbacks=callbacks, enable_checkpointing=False
    )
