"""DDP: each sample once per epoch across ranks, one MLflow run, global metrics (2 CPU procs)."""

from __future__ import annotations

import os
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

import warm
from digitlab.data.batches import TensorBatches
from digitlab.errors import DigitlabError
from digitlab.training.build import build_datamodule, check_accelerator


def seen(n: int, world: int, shuffle: bool, epoch: int = 0, batch_size: int = 7) -> list[list[int]]:
    """The sample indices each rank's batches hold in one epoch."""
    y = torch.arange(n)
    x = y.float().unsqueeze(1)
    shares = []
    for rank in range(world):
        batches = TensorBatches(x, y, batch_size, shuffle, seed=3, rank=rank, world_size=world)
        batches.set_epoch(epoch)
        indices = [int(i) for _, yb in batches for i in yb]
        assert len(indices) == batches.num_samples
        assert len(list(batches)) == len(batches)
        shares.append(indices)
    return shares


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [60, 61])
def test_evaluation_shares_hold_every_sample_exactly_once(n, world):
    shares = seen(n, world, shuffle=False)
    assert sorted(i for share in shares for i in share) == list(range(n))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [60, 61])
def test_training_shares_cover_every_sample_once_with_equal_steps(n, world):
    shares = seen(n, world, shuffle=True)
    counts = Counter(i for share in shares for i in share)
    assert set(counts) == set(range(n))
    # Equal shares keep the ranks in step (DDP all-reduces every step); as DistributedSampler
    # does, they are evened out by repeating the fewest samples needed: none when N divides.
    repeats = -n % world
    assert sum(counts.values()) == n + repeats
    assert sorted(counts.values()) == [1] * (n - repeats) + [2] * repeats
    assert len({len(share) for share in shares}) == 1
    assert (
        len(
            {
                len(TensorBatches(torch.zeros(n, 1), torch.zeros(n), 7, True, 3, r, world))
                for r in range(world)
            }
        )
        == 1
    )


def test_training_shares_change_with_the_epoch_and_repeat_with_it():
    assert seen(60, 2, shuffle=True, epoch=0) != seen(60, 2, shuffle=True, epoch=1)
    assert seen(60, 2, shuffle=True, epoch=1) == seen(60, 2, shuffle=True, epoch=1)


def test_datamodule_serves_each_rank_its_share(make_cfg):
    cfg = make_cfg("data.val_size=41")
    parts = {}
    for rank in range(2):
        datamodule = build_datamodule(cfg)
        cpu = SimpleNamespace(root_device=torch.device("cpu"))
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=2, strategy=cpu)
        datamodule.setup("fit")
        parts[rank] = {
            stage: torch.cat([y for _, y in getattr(datamodule, f"{stage}_dataloader")()])
            for stage in ("train", "val", "test")
        }
    full = build_datamodule(cfg)
    full.split()
    for stage in ("val", "test"):
        _, labels = full.raw[stage]
        both = torch.cat([parts[0][stage], parts[1][stage]])
        assert len(both) == len(labels)
        assert torch.equal(both.bincount(minlength=10), labels.bincount(minlength=10))
    n_train = len(full.raw["train"][1])
    assert len(parts[0]["train"]) == len(parts[1]["train"]) == -(-n_train // 2)


def evaluate(checkpoint_path: str, cfg) -> float:
    """Single-process test accuracy of a checkpoint's weights, without Lightning or torchmetrics."""
    from digitlab.training.checkpoints import network_from_checkpoint

    net, _ = network_from_checkpoint(checkpoint_path)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    x, y = datamodule.tensors["test"]
    with torch.no_grad():
        return (net.eval()(x).argmax(dim=1) == y).float().mean().item()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_records_one_run_with_global_metrics(
    make_cfg, data_root, store, tmp_path
):
    """The real command line: Lightning re-runs it for rank 1; rank 0 alone records the run."""
    run_dir = tmp_path / "run"
    overrides = [
        "trainer=ddp",
        "trainer.devices=2",
        "model=mlp",
        "data.val_size=41",
        "data.eval_batch_size=16",
        "trainer.max_epochs=2",
    ]
    cfg = make_cfg(*overrides)
    args = [
        f"{k}={v}"
        for k, v in (
            ("data.root", data_root),
            ("data.batch_size", 32),
            ("trainer.accelerator", "cpu"),
            ("trainer.enable_progress_bar", "false"),
            ("logger.tracking_uri", store["tracking_uri"]),
            ("logger.artifact_location", store["artifact_location"]),
            ("hydra.run.dir", run_dir),
            ("verbose", "true"),  # Lightning's INFO line below says that two processes ran
        )
    ]
    # Rank 0 forked warm (tests/warm.py); rank 1 is the new interpreter Lightning starts.
    out = warm.run(
        "digitlab",
        *overrides,
        *args,
        timeout=600,
        env={**os.environ, "DIGITLAB_ROOT": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Starting with 2 processes" in out.stdout + out.stderr
    assert out.stdout.count("finished in") == 1  # rank 1 reports nothing

    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config.yaml"} <= artifacts
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == 2  # one value per epoch, logged once (by rank 0)

    # Each rank tested half of the test set; the logged accuracy is the whole set's.
    accuracy = evaluate(str(run_dir / "checkpoints" / "best.ckpt"), cfg)
    assert run.data.metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("accelerator", ["gpu", "auto"])
def test_more_gpus_than_the_machine_has_is_one_line(monkeypatch, accelerator):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        DigitlabError,
        match=r"^trainer.devices=2 but this machine has 1 GPU\(s\): "
        r"use trainer.devices=1",
    ):
        check_accelerator(accelerator, 2)
    check_accelerator(accelerator, 1)  # trainer=ddp on one GPU
    check_accelerator("cpu", 2)  # two CPU processes
