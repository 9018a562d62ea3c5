"""Speed and start-up callbacks measure what they claim."""

from __future__ import annotations

import logging
import time

import lightning as L

import digitlab
from digitlab import clock
from digitlab.callbacks import EpochThroughput, TimeToFirstStep
from digitlab.training.build import build_datamodule, build_module


def fit_timed(cfg, *callbacks: L.Callback) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(build_module(cfg), datamodule=build_datamodule(cfg))
    return trainer


def test_time_to_first_step_counts_from_the_command_start(make_cfg, monkeypatch, caplog):
    monkeypatch.setattr(digitlab, "STARTED", time.time() - 100.0)  # "the command began 100 s ago"
    monkeypatch.setattr(clock, "job", None)  # no job timed on its own yet in this process
    first_step, throughput = TimeToFirstStep(), EpochThroughput()
    with caplog.at_level(logging.INFO, logger="digitlab.callbacks.throughput"):
        trainer = fit_timed(make_cfg("model=mlp"), first_step, throughput)
    assert 100.0 <= first_step.seconds < 100.0 + 600
    assert "after the command started" in caplog.text
    assert trainer.callback_metrics["train/samples_per_sec"] > 0


def test_a_sweeps_job_counts_its_first_step_from_its_own_start(make_cfg, monkeypatch, caplog):
    """A sweep's second job starts long after the command did: its wait is its own."""
    monkeypatch.setattr(digitlab, "STARTED", time.time() - 100.0)
    monkeypatch.setattr(clock, "job", None)
    clock.job_started()
    first_step = TimeToFirstStep()
    with caplog.at_level(logging.INFO, logger="digitlab.callbacks.throughput"):
        fit_timed(make_cfg("model=mlp"), first_step)
    assert first_step.seconds < 100.0
    assert "after the job started" in caplog.text
