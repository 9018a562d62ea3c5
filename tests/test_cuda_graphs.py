"""CUDA graphs around the fused steps (``cuda_graphs: true``): the buffered steps, which a GPU
captures and replays, train exactly as the eager fused path; everywhere else the option is refused
in one line. The capture itself is covered by the ``gpu`` tests (skipped without CUDA)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import checkpoint_accuracy
from digitlab.errors import DigitlabError
from digitlab.training import cuda_graphs
from digitlab.training.build import build_datamodule, build_module, build_trainer
from digitlab.training.run import train

# Adam under a one-cycle schedule that also cycles beta1 (both go through the graph's table),
# clipped gradients, and 200 training images in chunks of 4 x 8: 6 full chunks and an eager
# remainder of 8 per epoch.
STEPS = (
    "optimizer=adam",
    "scheduler=onecycle",
    "data.steps_per_call=4",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.gradient_clip_val=0.5",
    "trainer.limit_val_batches=0",
    "+trainer.enable_checkpointing=false",
)

RUN = cuda_graphs.GraphedSteps.run


def fit(cfg, tmp_path, graphed: bool, monkeypatch) -> tuple[L.LightningModule, list, L.Trainer]:
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    module.cuda_graphs = graphed  # past the config check, which refuses it without a GPU
    runs = []

    def counting(self, x, y):
        runs.append(self.graph)
        return RUN(self, x, y)

    monkeypatch.setattr(cuda_graphs.GraphedSteps, "run", counting)
    trainer = build_trainer(cfg, [], tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return module, runs, trainer


def same_weights(a: L.LightningModule, b: L.LightningModule, rtol: float, atol: float) -> None:
    theirs = b.net.state_dict()
    for name, value in a.net.state_dict().items():
        assert torch.allclose(value, theirs[name], rtol=rtol, atol=atol), name


def test_buffered_steps_train_as_the_eager_fused_path(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("model=lenet_small", *STEPS)
    eager, no_runs, eager_trainer = fit(cfg, tmp_path / "eager", False, monkeypatch)
    buffered, runs, trainer = fit(cfg, tmp_path / "buffered", True, monkeypatch)
    assert not no_runs and len(runs) == 12 and runs[0] is None  # 6 chunks x 2 epochs, uncaptured
    assert trainer.global_step == eager_trainer.global_step == 2 * 25  # every step counted
    same_weights(eager, buffered, 1e-4, 1e-6)
    for key in ("train/loss", "train/acc"):
        assert trainer.callback_metrics[key].item() == pytest.approx(
            eager_trainer.callback_metrics[key].item(), rel=1e-4
        )
    # the schedule went on from where the buffered steps left it: the same last learning rate
    assert buffered.optimizers().param_groups[0]["lr"] == pytest.approx(
        eager.optimizers().param_groups[0]["lr"]
    )


def test_cuda_graphs_without_a_gpu_is_refused_in_one_line_before_any_run(make_cfg):
    cfg = make_cfg("experiment=gpu")  # the GPU preset, with the tests' trainer.accelerator=cpu
    with pytest.raises(DigitlabError, match=r"^cuda_graphs=true needs a CUDA GPU: trainer\.acc"):
        train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=sgd"], "needs an optimizer that steps without reading the GPU back"),
        (["data.steps_per_call=1"], r"set data\.steps_per_call >= 2"),
        (["trainer.precision=16-mixed"], "cannot capture float16's gradient scaler"),
        (["scheduler.cycle_momentum=true"], "cannot follow a cycled beta1"),
        (["trainer.devices=2"], "replays one device's steps, and trainer.devices=2"),
        (["trainer=ddp"], "replays one device's steps"),
    ],
)
def test_cuda_graphs_refuses_what_a_graph_cannot_hold(make_cfg, monkeypatch, overrides, message):
    cfg = make_cfg("experiment=gpu", "trainer.accelerator=gpu", *overrides)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(DigitlabError, match=message):
        cuda_graphs.check_cuda_graphs(cfg)


def test_the_gpu_preset_without_graphs_trains_on_a_cpu(make_cfg, tmp_path):
    """Its other levers (fused Adam, channels_last, the one-cycle retune) run anywhere."""
    cfg = make_cfg(
        "experiment=gpu", "cuda_graphs=false", "trainer.precision=32-true", "data.steps_per_call=2"
    )
    result = train(cfg, output_dir=tmp_path)
    assert result["metrics"]["test/acc"] == pytest.approx(
        checkpoint_accuracy(result["best_checkpoint"], cfg), abs=1e-6
    )
    conv = build_module(cfg).net.features[3].weight  # 24 -> 32 channels
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_captured_steps_train_as_the_eager_fused_path_on_the_gpu(
    make_cfg, tmp_path, monkeypatch, precision
):
    torch.backends.cudnn.deterministic = True
    cfg = make_cfg(
        "model=lenet_small",
        *STEPS,
        "trainer.accelerator=gpu",
        f"trainer.precision={precision}",
        "float32_matmul_precision=highest",
    )
    eager, _, eager_trainer = fit(cfg, tmp_path / "eager", False, monkeypatch)
    graphed, runs, trainer = fit(cfg, tmp_path / "graphed", True, monkeypatch)
    assert len(runs) == 12 and all(g is not None for g in runs)  # every full chunk replayed
    assert trainer.global_step == eager_trainer.global_step
    tolerance = 1e-3 if precision == "32-true" else 2e-2
    same_weights(eager, graphed, tolerance, tolerance)
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(
        eager_trainer.callback_metrics["train/acc"].item(), abs=0.02
    )


@pytest.mark.gpu
def test_the_gpu_preset_records_a_finished_run_with_its_capture_time(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=gpu", "trainer.accelerator=gpu", "data.steps_per_call=4", "data.batch_size=8"
    )
    result = train(cfg, output_dir=tmp_path)
    run = MlflowClient(cfg.logger.tracking_uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["train/graph_capture_s"] > 0
    assert (
        abs(run.data.metrics["test/acc"] - checkpoint_accuracy(result["best_checkpoint"], cfg))
        < 0.05  # bf16 on the GPU against float32 on the CPU
    )
