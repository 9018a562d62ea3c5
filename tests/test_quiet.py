"""A run prints digitlab's own lines; the libraries' INFO lines (Lightning's devices and
checkpoint restores, MLflow's table creation) only with ``verbose=true``."""

from __future__ import annotations

import pytest

import warm
from conftest import fast_run

NOISE = (
    "Creating initial MLflow database tables",
    "GPU available:",
    "Restoring states from",
    "Loaded model weights from",
    "first training step",  # a measurement, logged to the run as time_to_first_step_s
)


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_library_info_lines_only_on_request(data_root, tmp_path, verbose):
    store = tmp_path / "mlruns"  # a new store: MLflow creates its tables
    uris = {
        "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
        "artifact_location": str(store / "artifacts"),
    }
    result = warm.run(
        "digitlab",
        *fast_run(data_root, uris),
        "model=mlp",
        f"hydra.run.dir={tmp_path / 'job'}",
        f"verbose={str(verbose).lower()}",
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "digitlab: mlp-mnist-sgd-s42 finished" in output and "epoch 1/1" in output
    shown = [line for line in NOISE if line in output]
    assert shown == (list(NOISE) if verbose else []), output[-3000:]
    if not verbose:  # no line in Hydra's log format ("[time][logger][INFO] - ...")
        assert "][INFO] - " not in output, output[-3000:]
