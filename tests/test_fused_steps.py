"""Several optimizer steps per Lightning step, stepping the torch optimizer directly: Lightning
still counts every one (``trainer.global_step``), through the one private call that does it."""

from __future__ import annotations

import lightning as L

from digitlab.training.build import build_datamodule, build_module, build_trainer
from digitlab.training.fused import counted_step


def test_direct_steps_are_counted_by_lightning(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(
        "model=mlp",
        "data.steps_per_call=4",
        "data.batch_size=8",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0",
        "+trainer.enable_checkpointing=false",
    )
    module, calls = build_module(cfg), []

    def counting(optimizer):
        calls.append(optimizer)
        counted_step(optimizer)

    monkeypatch.setattr("digitlab.training.fused.counted_step", counting)
    trainer = build_trainer(cfg, [], tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert module._direct and len(calls) == 8  # the direct path took every step
    assert trainer.global_step == 8  # and Lightning counted each of them
    assert isinstance(trainer, L.Trainer)
