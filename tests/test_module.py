"""The plain module (Lightning's automatic optimization) and the fused one (several optimizer
steps per Lightning step) train identically; clipping, accumulation and schedules hold on both."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from digitlab.training.build import build_datamodule, build_module, build_trainer
from digitlab.training.classifier import DigitClassifier
from digitlab.training.fused import FusedStepsClassifier


def fit(cfg, epochs: int = 2, callbacks=()):
    """Fit with the Trainer the run would build (its clipping and accumulation settings)."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build_datamodule(cfg), build_module(cfg)
    with open_dict(cfg):
        cfg.trainer.update(
            max_epochs=epochs, enable_checkpointing=False, enable_model_summary=False
        )
    trainer = build_trainer(cfg, list(callbacks), Path(tempfile.mkdtemp()))
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, datamodule


def test_the_default_is_lightnings_automatic_optimization_and_fused_steps_an_opt_in(make_cfg):
    plain = build_module(make_cfg())
    assert type(plain) is DigitClassifier and plain.automatic_optimization
    for opt_in in (make_cfg("data.steps_per_call=20"), make_cfg("experiment=fast")):
        fused = build_module(opt_in)
        assert isinstance(fused, FusedStepsClassifier) and not fused.automatic_optimization


def test_steps_per_call_changes_speed_not_results(make_cfg):
    one_trainer, one, _ = fit(make_cfg("model=mlp", "data.steps_per_call=1"))
    many_trainer, many, datamodule = fit(make_cfg("model=mlp", "data.steps_per_call=3"))
    # The config picks the module: Lightning's automatic optimization for one step per call.
    assert type(one) is DigitClassifier and one.automatic_optimization
    assert type(many) is FusedStepsClassifier and not many.automatic_optimization

    steps_per_epoch = -(-len(datamodule.tensors["train"][1]) // 32)  # 200 samples, batch 32: 7
    assert one_trainer.global_step == many_trainer.global_step == 2 * steps_per_epoch
    assert many_trainer.num_training_batches == 3  # 96 + 96 + 8 samples
    for a, b in zip(one.net.parameters(), many.net.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
        expected = one_trainer.callback_metrics[name]
        torch.testing.assert_close(many_trainer.callback_metrics[name], expected)


def test_epoch_schedulers_are_stepped_under_manual_optimization(make_cfg):
    cfg = make_cfg("model=mlp", "data.steps_per_call=4")
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    factory = module.optimizer_factory

    def with_scheduler():
        optimizer = factory(module.parameters())
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
        }

    module.configure_optimizers = with_scheduler
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.optimizers[0].param_groups[0]["lr"] == cfg.optimizer.lr * 0.25


def test_evaluation_loss_and_accuracy_are_per_sample_over_uneven_batches():
    from functools import partial

    import torch.nn.functional as F

    from digitlab.models import MLP
    from digitlab.training.classifier import DigitClassifier

    module = DigitClassifier(MLP(), partial(torch.optim.SGD, lr=0.1))
    x, y = torch.randn(7, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5, 6])
    module.validation_step((x[:6], y[:6]), 0)  # a full batch and a short last one
    module.validation_step((x[6:], y[6:]), 1)
    logits = module.net(x)
    torch.testing.assert_close(module.mean_loss["val_loss"].compute(), F.cross_entropy(logits, y))
    expected_acc = (logits.argmax(1) == y).float().mean()
    torch.testing.assert_close(module.accuracy["val_acc"].compute(), expected_acc)


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_one_cycle_spans_exactly_the_optimizer_steps_of_the_run(make_cfg, steps_per_call):
    cfg = make_cfg(
        "model=mlp",
        "scheduler=onecycle",
        "optimizer.lr=0.2",
        f"data.steps_per_call={steps_per_call}",
    )
    trainer, module, datamodule = fit(cfg, epochs=2)
    steps = 2 * -(-len(datamodule.tensors["train"][1]) // cfg.data.batch_size)
    assert trainer.global_step == steps
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == steps and scheduler.last_epoch == steps  # stepped every step
    # The last step ran at the bottom of the cycle; one step past it the rate is still far below.
    assert max(scheduler.get_last_lr()) < 0.2 / 10


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_reduce_on_plateau_steps_on_the_validation_loss_and_cuts_the_rate(make_cfg, steps_per_call):
    # An improvement must beat the best val/loss by 10 (absolute): after the first epoch sets
    # the best, every epoch is a plateau, and with patience 0 each one halves the rate.
    cfg = make_cfg(
        "model=mlp",
        "scheduler=plateau",
        "scheduler.patience=0",
        "+scheduler.threshold=10.0",
        "+scheduler.threshold_mode=abs",
        "optimizer.lr=0.1",
        f"data.steps_per_call={steps_per_call}",
    )
    trainer, _, _ = fit(cfg, epochs=3)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert 0 < scheduler.best < float("inf")  # it was handed measured losses
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


def test_a_bad_scheduler_interval_is_one_line(make_cfg):
    import pytest

    from digitlab.config.spec import check_config
    from digitlab.errors import DigitlabError

    with pytest.raises(DigitlabError, match="scheduler.interval='hourly' is invalid"):
        check_config(make_cfg("model=mlp", "scheduler=cosine", "scheduler.interval=hourly"))


def test_step_hooks_reach_a_callback_that_has_them_and_training_is_the_same(make_cfg):
    class CountSteps(L.Callback):
        def __init__(self):
            self.calls = 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.calls += 1

    cfg = make_cfg("model=mlp", "data.steps_per_call=3")
    direct_trainer, direct, _ = fit(cfg)  # no callback wants the hooks: direct optimizer steps
    counter = CountSteps()
    hooked_trainer, hooked, _ = fit(cfg, callbacks=[counter])  # through Lightning's wrappers
    assert counter.calls == hooked_trainer.global_step == direct_trainer.global_step == 14
    for a, b in zip(direct.net.parameters(), hooked.net.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("steps_per_call", [1, 20])  # Lightning clips (plain), the module (fused)
def test_gradient_clipping_from_the_trainer_config_bounds_every_update(make_cfg, steps_per_call):
    cfg = make_cfg(
        "model=mlp",
        "optimizer.lr=0.5",
        "trainer.gradient_clip_val=1e-6",
        f"data.steps_per_call={steps_per_call}",
    )
    L.seed_everything(cfg.seed, verbose=False)
    start = [p.detach().clone() for p in build_module(cfg).net.parameters()]  # same seed, same init
    trainer, clipped, _ = fit(cfg, epochs=1)
    steps = trainer.global_step
    # 7 SGD steps of lr 0.5 with gradients clipped to norm 1e-6 move the weights by <= 3.5e-6
    moved = torch.sqrt(
        sum(((p - s) ** 2).sum() for p, s in zip(clipped.net.parameters(), start, strict=True))
    )
    assert steps == 7 and 0 < moved <= steps * 0.5 * 1e-6 * 1.001


def test_gradient_accumulation_is_lightnings_on_the_plain_module(make_cfg):
    cfg = make_cfg("model=mlp", "data.steps_per_call=1", "+trainer.accumulate_grad_batches=2")
    trainer, module, _ = fit(cfg, epochs=1)
    assert type(module) is DigitClassifier
    assert trainer.accumulate_grad_batches == 2
    assert trainer.global_step == 4  # 7 batches of 32, one optimizer step per 2 (and the last)
