"""End to end on the real MNIST files (skipped, with the reason shown, where they are absent)."""

from __future__ import annotations

import pytest

from conftest import REAL_DATA
from digitlab.training.run import train

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def test_mlp_one_epoch_on_real_mnist_reaches_90_percent(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=mlp",
        f"data.root={REAL_DATA}",
        "data.val_size=5000",
        "data.batch_size=100",
        "data.eval_batch_size=1000",
    )
    result = train(cfg, output_dir=tmp_path)
    assert result["metrics"]["test/acc"] >= 0.90
