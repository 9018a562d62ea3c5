"""The command line: fast answers without torch, one-line errors, and a full run's summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import warm


def digitlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


def test_cfg_job_prints_the_config_without_importing_torch():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['digitlab', 'model=mlp', '--cfg', 'job']\n"
        "try:\n    runpy.run_module('digitlab', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "_target_: digitlab.models.MLP" in out.stdout
    assert "IMPORTED []" in out.stdout


def test_help_lists_the_config_groups():
    out = digitlab("--help")
    assert out.returncode == 0
    assert "model: convnet, lenet, lenet5, lenet_small, mlp" in out.stdout
    assert "data: kaggle, mnist" in out.stdout


def test_help_shows_the_config_composed_with_the_overrides():
    out = digitlab("model=mlp", "optimizer=adam", "--help")
    assert out.returncode == 0
    assert "_target_: digitlab.models.MLP" in out.stdout and "_target_: torch.optim.Adam" in out.stdout
    bad = digitlab("model=resnet", "--help")
    assert bad.returncode == 1 and "Could not find 'model/resnet'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help_lists_exactly_the_groups_and_options_hydra_finds():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from digitlab.cli.help import config_groups
    from digitlab.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = {g: sorted(loader.get_group_options(g)) for g in config_groups(CONF_DIR)}
        top = {g for g in loader.list_groups("") if g != "hydra"}
    assert groups == config_groups(CONF_DIR)
    assert top == {g.split("/")[0] for g in groups}


def test_unknown_option_lists_the_valid_ones_without_a_trace():
    out = digitlab("model=resnet")
    assert out.returncode == 1
    assert "Could not find 'model/resnet'" in out.stderr
    assert "lenet5" in out.stderr
    assert "Traceback" not in out.stderr


def test_wrong_value_type_is_one_line(tmp_path):
    out = digitlab("data.batch_size=abc", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "digitlab: error: data.batch_size='abc' is invalid: it must be an integer >= 1"
    )
    # The bad-input cases of test_errors.py run forked from a warm process (tests/warm.py):
    # it must answer exactly as a new interpreter does.
    forked = warm.run("digitlab", "data.batch_size=abc", f"hydra.run.dir={tmp_path}")
    assert (forked.returncode, forked.stdout, forked.stderr) == (1, out.stdout, out.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.slow
def test_gpu_requested_without_a_gpu(data_root, store, tmp_path):
    out = warm.run("digitlab",
        "trainer.accelerator=gpu", f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}", f"hydra.run.dir={tmp_path / 'job'}",
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "digitlab: error: trainer.accelerator=gpu but PyTorch sees no CUDA GPU" in out.stderr


@pytest.mark.slow
def test_a_full_run_from_the_command_line(data_root, store, tmp_path):
    """A new interpreter, as a user's command: its output, what it logged, its fast exit, and no
    deprecation warning from any dependency (progress bar, pictures and model logging on)."""
    out = digitlab(
        "model=mlp", f"data.root={data_root}", "data.val_size=40", "trainer.max_epochs=1",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
        f"hydra.run.dir={tmp_path / 'job'}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    output = out.stdout + out.stderr
    assert not re.search(r"Deprecat|FutureWarning|deprecated", output), output[-3000:]
    assert re.search(r"^epoch 1/1  train loss", out.stdout, re.M), out.stdout
    assert "digitlab: mlp-mnist-sgd-s42 finished in" in out.stdout
    ui = f"open the UI: uv run digitlab-ui --backend-store-uri {store['tracking_uri']}"
    assert ui in out.stdout
    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in out.stdout
    assert run.data.tags["choice.model"] == "mlp"
    assert run.data.tags["choice.optimizer"] == "sgd"
    # The summary line carries the run's own test accuracy, and best.ckpt reached the store
    # before the command's fast exit (no interpreter teardown): it downloads and loads whole.
    shown = re.search(r"test/acc (\d\.\d{4})", out.stdout)
    assert shown and float(shown.group(1)) == round(run.data.metrics["test/acc"], 4)
    logged = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp_path))
    local = tmp_path / "job" / "checkpoints" / "best.ckpt"
    assert Path(logged).read_bytes() == local.read_bytes()
    assert torch.load(logged, weights_only=True)["state_dict"]
