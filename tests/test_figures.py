"""The figure callback writes exactly its documented artifact layout into the run, or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from digitlab.data.datamodule import prepare
from digitlab.errors import DigitlabError
from digitlab.figures import FigureLogger, figure_callbacks, grey_levels
from digitlab.training.run import train

DATA = {f"figures/data/samples_{s}.png" for s in ("train", "val", "test")} | {
    "figures/data/label_histogram.png"
}
PREDICTIONS = {
    f"figures/predictions/{name}.png"
    for name in ("confusion_matrix", "per_class_accuracy", "confident_mistakes", "probabilities")
}
STATS_COLUMNS = ["filter", "min", "max", "mean", "std"]


def filters(layers: list[str], whens: list[str]) -> set[str]:
    return {
        f"figures/filters/{layer}_{kind}{when}.{ext}"
        for layer in layers
        for when in whens
        for kind, ext in (("", "png"), ("stats_", "json"))
    }


def artifact_files(client: MlflowClient, run_id: str, path: str = "figures") -> set[str]:
    """Every file below ``path`` in the run, recursively."""
    files = set()
    for item in client.list_artifacts(run_id, path):
        files |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return files


def run(make_cfg, tmp_path, *overrides: str, on: bool = True) -> tuple[MlflowClient, str, dict]:
    switch = ["figures.enabled=true"] if on else []
    cfg = make_cfg("trainer.limit_train_batches=2", *switch, *overrides)
    result = train(cfg, output_dir=tmp_path / "job")
    return MlflowClient(cfg.logger.tracking_uri), result["run_id"], result


def test_lenet_run_logs_exactly_the_documented_figures(make_cfg, tmp_path):
    client, run_id, _ = run(make_cfg, tmp_path, "model=lenet")
    expected = DATA | PREDICTIONS | filters(["conv1", "conv2"], ["init", "final"])
    assert artifact_files(client, run_id) == expected


def test_mlp_run_draws_first_layer_templates_every_n_epochs(make_cfg, tmp_path):
    client, run_id, _ = run(
        make_cfg, tmp_path, "model=mlp", "trainer.max_epochs=3", "figures.filters_every_n_epochs=1"
    )
    expected = DATA | PREDICTIONS | filters(["fc1"], ["init", "epoch1", "epoch2", "final"])
    assert artifact_files(client, run_id) == expected


@pytest.mark.parametrize("switch", ["figures.enabled=false", "figures=off"])
def test_figures_off_logs_none(make_cfg, tmp_path, switch):
    client, run_id, _ = run(make_cfg, tmp_path, "model=lenet_small", switch, on=False)
    assert client.list_artifacts(run_id, "figures") == []
    assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}


def test_stats_table_loads_back_with_one_row_per_filter_and_the_layer(make_cfg, tmp_path):
    client, run_id, _ = run(make_cfg, tmp_path, "model=lenet_small")  # 12 conv1 filters
    local = client.download_artifacts(run_id, "figures/filters/conv1_stats_final.json", tmp_path)
    table = json.loads(Path(local).read_text())
    assert table["columns"] == STATS_COLUMNS
    assert [row[0] for row in table["data"]] == [str(i) for i in range(12)] + ["all"]
    for _, low, high, mean, std in table["data"]:
        assert low <= mean <= high and std >= 0


def test_kaggle_holdout_is_drawn_once_as_val_and_test(make_cfg, tmp_path):
    client, run_id, _ = run(make_cfg, tmp_path, "data=kaggle", "model=mlp")
    data = artifact_files(client, run_id, "figures/data")
    assert data == {"figures/data/samples_train.png", "figures/data/samples_val.png",
                    "figures/data/label_histogram.png"}


def test_bad_figure_settings_fail_in_one_line():
    with pytest.raises(DigitlabError, match=r"figures.filters_every_n_epochs=-1 .* >= 0"):
        FigureLogger(filters_every_n_epochs=-1)
    cfg = OmegaConf.create({"figures": {"enabled": True, "sample": 3}})
    with pytest.raises(DigitlabError, match="unknown key"):
        figure_callbacks(cfg)


@pytest.mark.parametrize(
    ("scale", "mean", "std"),
    [(80.0, 0.4176, 1.0), (255.0, 0.1307, 0.3081)],  # mxnet_jl_kaggle's scale; torchvision's
)
def test_grey_levels_undo_prepare_including_its_scale(scale, mean, std):
    images = (torch.arange(2 * 28 * 28) % 256).to(torch.uint8).reshape(2, 28, 28)
    x = prepare(images, torch.device("cpu"), scale, mean, std, 28)
    shown = grey_levels(x[:, 0], scale, mean, std)
    assert torch.allclose(shown, images.float() / 255, rtol=0, atol=1e-5)


def test_a_resumed_run_keeps_its_initialisation_pictures(make_cfg, tmp_path):
    """Resuming starts from trained weights: the run's init filters and its stats stay those of
    the real initialisation, and the final ones are redrawn from the resumed training."""
    cfg = make_cfg("model=lenet", "figures.enabled=true", "trainer.max_epochs=1")
    first = train(cfg, output_dir=tmp_path / "first")
    client = MlflowClient(cfg.logger.tracking_uri)

    def logged(name: str) -> bytes:
        folder = tmp_path / f"download-{len(list(tmp_path.iterdir()))}"
        return Path(client.download_artifacts(first["run_id"], name, str(folder))).read_bytes()

    init_stats, final_stats = (logged(f"figures/filters/conv1_stats_{w}.json") for w in ("init", "final"))
    resumed = train(make_cfg("model=lenet", "figures.enabled=true", "trainer.max_epochs=2",
                             f"resume={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"),
                    output_dir=tmp_path / "second")
    assert resumed["run_id"] == first["run_id"]
    assert logged("figures/filters/conv1_stats_init.json") == init_stats
    assert logged("figures/filters/conv1_stats_final.json") != final_stats
