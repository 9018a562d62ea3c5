"""Speed and start-up callbacks measure what they claim."""

from __future__ import annotations

import time

import lightning as L

import digitlab
from digitlab.callbacks import EpochThroughput, TimeToFirstStep
from digitlab.training.build import build_datamodule, build_module


def test_time_to_first_step_counts_from_the_command_start(make_cfg, monkeypatch):
    monkeypatch.setattr(digitlab, "STARTED", time.time() - 100.0)  # "the command began 100 s ago"
    cfg = make_cfg("model=mlp")
    first_step, throughput = TimeToFirstStep(), EpochThroughput()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[first_step, throughput],
    )
    trainer.fit(build_module(cfg), datamodule=build_datamodule(cfg))
    assert 100.0 <= first_step.seconds < 100.0 + 600
    assert trainer.callback_metrics["train/samples_per_sec"] > 0
