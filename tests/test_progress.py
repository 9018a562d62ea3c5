"""What the terminal shows: one line per epoch with the epoch's own numbers, and a progress bar in
images without v_num. (test_cli.py's full run checks that a command shows no deprecation
warnings from dependencies.)"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from conftest import N_TRAIN
from digitlab.callbacks import EpochReport, EpochThroughput, SampleProgressBar
from digitlab.training.run import train

LINE = re.compile(
    r"^epoch (\d)/2  train loss ([\d.]+) acc ([\d.]+)  val loss ([\d.]+) acc ([\d.]+)"
    r"  [\d,]+ img/s  [\d.]+ s$",
    re.M,
)


class RecordingBar(SampleProgressBar):
    """Notes the training bar's (total, completed) and its description at each epoch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, float]] = []
        self.descriptions: list[str] = []
        self.shown: list[str] = []  # the training bar's line as the terminal shows it

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        task = next(t for t in self.progress.tasks if t.id == self.train_progress_bar_id)
        self.seen.append((task.total, task.completed))
        self.descriptions.append(task.description.strip())
        console = Console(file=io.StringIO(), width=200, record=True)
        console.print(self.progress.make_tasks_table([task]))
        self.shown.append(console.export_text())
        super().on_train_epoch_end(trainer, pl_module)


def test_epoch_lines_carry_that_epochs_metrics_and_the_bar_counts_images(
    make_cfg, tmp_path, capsys
):
    cfg = make_cfg(
        "callbacks=none",
        "trainer.max_epochs=2",
        "data.steps_per_call=5",
        "trainer.enable_progress_bar=true",
    )
    bar = RecordingBar()
    result = train(
        cfg, output_dir=tmp_path / "job", callbacks=[bar, EpochThroughput(), EpochReport()]
    )
    lines = LINE.findall(capsys.readouterr().out)
    assert [int(line[0]) for line in lines] == [1, 2]
    # the bar names the epoch as its report line does, counting from 1
    assert bar.descriptions == ["epoch 1/2", "epoch 2/2"]
    client = MlflowClient(cfg.logger.tracking_uri)
    for key, column in (("train/loss", 1), ("val/acc", 4)):
        history = [m.value for m in client.get_metric_history(result["run_id"], key)]
        assert [float(line[column]) for line in lines] == pytest.approx(history, abs=1e-4), key
    # images, not the 2 Lightning steps of 5 optimizer steps each
    assert bar.seen == [(N_TRAIN - 40, N_TRAIN - 40)] * 2
    assert "v_num" not in bar.get_metrics(bar.trainer, None)
    # its speed in the unit of the epoch line's (img/s), not Lightning's it/s
    assert all(re.search(r" [\d,]+ img/s", shown) for shown in bar.shown), bar.shown
    assert not any("it/s" in shown for shown in bar.shown), bar.shown


def test_the_store_charts_epochs_tests_once_and_keeps_short_decimals(make_cfg, tmp_path):
    """A metric's step is its epoch, counted from 1 as the epoch lines count; the test metrics
    are logged once (also with a logged model, which gets them too); values are the decimals
    float32 holds (0.988, not 0.98799997)."""
    from digitlab.training.logged_model import model_metrics

    cfg = make_cfg("callbacks=none", "trainer.max_epochs=2", "logger.log_model=true")
    result = train(cfg, output_dir=tmp_path / "job", callbacks=[EpochThroughput()])
    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result["run_id"])
    histories = {k: client.get_metric_history(run.info.run_id, k) for k in run.data.metrics}
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "train/samples_per_sec"):
        assert [m.step for m in histories[key]] == [1, 2], key
    assert "epoch" not in histories  # the step says it
    for key in ("test/acc", "test/loss"):
        assert [m.step for m in histories[key]] == [2], key  # once, at the last epoch
    for key, history in histories.items():
        for m in history:
            single = np.float32(m.value)
            if float(single) == m.value:  # a float32 metric: its shortest decimal
                assert repr(m.value) == str(single), (key, m.value)
    assert result["metrics"]["test/acc"] == run.data.metrics["test/acc"]
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model_metrics(client, model.model_id)["test/acc"] == run.data.metrics["test/acc"]


def test_with_limit_train_batches_the_bar_counts_the_images_trained(make_cfg, tmp_path):
    """One Lightning step of 2 optimizer steps of 32 images: 64 images of the 200, not 200."""
    cfg = make_cfg(
        "callbacks=none",
        "data.steps_per_call=2",
        "trainer.limit_train_batches=1",
        "trainer.enable_progress_bar=true",
    )
    bar = RecordingBar()
    train(cfg, output_dir=tmp_path / "job", callbacks=[bar])
    assert bar.seen == [(64, 64)]
