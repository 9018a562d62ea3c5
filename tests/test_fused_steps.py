"""Several optimizer steps per Lightning step (``data.steps_per_call > 1``, an opt-in): Lightning
counts every one (``trainer.global_step``), the steps a CUDA graph replay took included, through
its public optimizer wrapper."""

from __future__ import annotations

import torch

from digitlab.training.build import build_datamodule, build_module, build_trainer
from digitlab.training.fused import FusedStepsClassifier, count_taken_steps

FUSED = (
    "data.steps_per_call=4",
    "data.batch_size=8",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0",
    "+trainer.enable_checkpointing=false",
)


def test_fused_steps_are_counted_by_lightning(make_cfg, tmp_path):
    cfg = make_cfg("model=mlp", *FUSED)
    module = build_module(cfg)
    trainer = build_trainer(cfg, [], tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert isinstance(module, FusedStepsClassifier) and not module.automatic_optimization
    assert trainer.global_step == 8  # 2 Lightning steps of 4 optimizer steps


def test_steps_taken_already_are_counted_without_changing_the_training(make_cfg, tmp_path):
    """What a graph replay does after its steps: Lightning counts them, and the weights, Adam's
    state and the very gradient tensors (which a graph writes into) stay as they were."""
    cfg = make_cfg("model=mlp", "optimizer=adam", *FUSED)
    module = build_module(cfg)
    step = module.training_step
    seen = []

    def step_then_count(batch, batch_idx):
        out = step(batch, batch_idx)
        optimizer = module.optimizers()
        params = list(module.net.parameters())
        before = [p.detach().clone() for p in params], [p.grad for p in params]
        state = [v.clone() for p in params for v in optimizer.optimizer.state[p].values()]
        count_taken_steps(optimizer, 3)
        assert all(torch.equal(a, p) for a, p in zip(before[0], params, strict=True))
        assert all(g is p.grad for g, p in zip(before[1], params, strict=True))
        after = [v for p in params for v in optimizer.optimizer.state[p].values()]
        assert len(after) == len(state) and all(map(torch.equal, state, after))
        seen.append(module.trainer.global_step)
        return out

    module.training_step = step_then_count
    trainer = build_trainer(cfg, [], tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert seen == [4 + 3, 2 * (4 + 3)]  # each call's 4 steps, and the 3 counted after them
    assert trainer.global_step == 14
