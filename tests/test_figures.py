"""The figure callback writes exactly its documented artifact layout into the run, or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import copy_store, fast_config
from digitlab.data.datamodule import prepare
from digitlab.errors import DigitlabError
from digitlab.figures.callback import FigureLogger, figure_callbacks, grey_levels
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


@pytest.mark.slow
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
    assert data == {
        "figures/data/samples_train.png",
        "figures/data/samples_val.png",
        "figures/data/label_histogram.png",
    }


def test_an_unknown_figure_setting_fails_in_one_line():
    # A count out of range is the schema's (docs/errors.md, "a picture count that cannot work").
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


@pytest.mark.slow
def test_a_resumed_run_keeps_its_initialisation_pictures(make_cfg, tmp_path):
    """Resuming starts from trained weights: the run's init filters and its stats stay those of
    the real initialisation, and the final ones are redrawn from the resumed training."""
    cfg = make_cfg("model=lenet", "figures.enabled=true")
    first = train(cfg, output_dir=tmp_path / "first")
    client = MlflowClient(cfg.logger.tracking_uri)

    def logged(name: str) -> bytes:
        folder = tmp_path / f"download-{len(list(tmp_path.iterdir()))}"
        return Path(client.download_artifacts(first["run_id"], name, str(folder))).read_bytes()

    init_stats, final_stats = (
        logged(f"figures/filters/conv1_stats_{w}.json") for w in ("init", "final")
    )
    resumed = train(
        make_cfg(
            "model=lenet",
            "figures.enabled=true",
            "trainer.max_epochs=2",
            f"resume={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
        ),
        output_dir=tmp_path / "second",
    )
    assert resumed["run_id"] == first["run_id"]
    assert logged("figures/filters/conv1_stats_init.json") == init_stats
    assert logged("figures/filters/conv1_stats_final.json") != final_stats


# -- what the pictures show --------------------------------------------------------------------


class RecordingFigureLogger(FigureLogger):
    """The real callback, keeping what each picture shows (its images' arrays and colour limits,
    its texts, its bars) before it is logged and cleared; keyed by path under ``figures/``."""

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.shown: dict[str, dict] = {}

    def log_figure(self, trainer, fig, path: str) -> None:
        images = [im for ax in fig.axes for im in ax.images]
        self.shown[path] = {
            "arrays": [np.ma.filled(im.get_array().astype(float), np.nan) for im in images],
            "clims": [im.get_clim() for im in images],
            "texts": [t.get_text() for ax in fig.axes for t in ax.texts],
            "text_xy": [t.get_position() for ax in fig.axes for t in ax.texts],
            "bars": [
                bars
                for ax in fig.axes
                if (bars := [p.get_height() for p in ax.patches if isinstance(p, Rectangle)])
            ],
        }
        super().log_figure(trainer, fig, path)


class SpoilLastEpoch(L.Callback):
    """Zeroes the network's output layer before the last epoch's validation: that epoch scores
    at chance, so best.ckpt (an earlier epoch) and the final weights differ."""

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == trainer.max_epochs - 1:
            output = [m for m in pl_module.net.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                output.weight.zero_()
                output.bias.zero_()


@pytest.fixture(scope="module")
def spoiled_run(tmp_path_factory, data_root, migrated_db):
    """One lenet_small run of 3 epochs, filters drawn every epoch, its last epoch spoiled:
    (result, cfg, the recorded pictures)."""
    folder = tmp_path_factory.mktemp("spoiled")
    # Four SGD steps an epoch: a network that still makes mistakes (about a quarter of the test
    # digits at its best epoch) on digits that a longer training learns perfectly.
    cfg = fast_config(
        data_root,
        copy_store(folder, migrated_db),
        "model=lenet_small",
        "trainer.max_epochs=3",
        "data.steps_per_call=1",
        "trainer.limit_train_batches=4",
    )
    recorder = RecordingFigureLogger(filters_every_n_epochs=1)
    result = train(cfg, output_dir=folder / "job", callbacks=[SpoilLastEpoch(), recorder])
    return result, cfg, recorder.shown


def tiles(shown: dict, side: int = 28) -> list[np.ndarray]:
    """The captioned tiles of a mosaic picture, in caption order (each caption is centred
    above its tile; the first non-blank row below it is the tile's top)."""
    canvas = shown["arrays"][0]
    found = []
    for x, y in shown["text_xy"]:
        x0 = round(x - (side - 1) / 2)
        y0 = next(r for r in range(int(np.ceil(y)), len(canvas)) if not np.isnan(canvas[r, x0]))
        found.append(canvas[y0 : y0 + side, x0 : x0 + side])
    return found


def best_checkpoint_predictions(result, cfg):
    """(uint8 test images, labels, probabilities) of best.ckpt's network, computed here."""
    from digitlab.training.build import build_datamodule
    from digitlab.training.checkpoints import network_from_checkpoint

    net, _ = network_from_checkpoint(result["best_checkpoint"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    x, y = datamodule.tensors["test"]
    with torch.no_grad():
        probs = net(x).softmax(1)
    return datamodule.raw["test"][0], y, probs


def test_prediction_pictures_show_the_best_checkpoint_not_the_last_weights(spoiled_run):
    result, cfg, shown = spoiled_run
    folder = Path(result["best_checkpoint"]).parent
    best = torch.load(folder / "best.ckpt", weights_only=True)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert best["epoch"] < last["epoch"] == 2  # the spoiled last epoch did not become the best
    images, y, probs = best_checkpoint_predictions(result, cfg)
    confidence, pred = probs.max(1)
    assert int((pred != y).sum()) >= 16  # enough mistakes to fill the picture

    matrix = torch.zeros(10, 10, dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        matrix[t, p] += 1
    confusion = shown["predictions/confusion_matrix.png"]
    assert confusion["texts"][:100] == [str(int(v)) for v in matrix.flatten()]

    # The 16 wrong test digits best.ckpt was surest of, most confident first.
    wrong = (pred != y).nonzero().squeeze(1).tolist()
    worst = sorted(wrong, key=lambda i: -float(confidence[i]))[:16]
    mistakes = shown["predictions/confident_mistakes.png"]
    assert mistakes["texts"] == [
        f"true {int(y[i])} → pred {int(pred[i])} ({int(float(confidence[i]) * 100)}%)"
        for i in worst
    ]
    for tile, i in zip(tiles(mistakes), worst, strict=True):
        assert np.allclose(tile, images[i].numpy() / 255, atol=1e-5)

    beliefs = shown["predictions/probabilities.png"]
    for bars, row in zip(beliefs["bars"], range(4), strict=False):  # the first test digits
        assert bars == pytest.approx(probs[row].tolist(), abs=1e-6)


def test_every_picture_of_a_layer_shares_one_colour_scale(spoiled_run):
    result, _, shown = spoiled_run
    last = torch.load(Path(result["best_checkpoint"]).parent / "last.ckpt", weights_only=True)
    whens = ("init", "epoch1", "epoch2", "final")
    for layer, key in (("conv1", "net.features.0.weight"), ("conv2", "net.features.3.weight")):
        pictures = [shown[f"filters/{layer}_{when}.png"] for when in whens]
        weights = [p["arrays"][0][~np.isnan(p["arrays"][0])] for p in pictures]
        # One limit for the layer: the 99.5th percentile of |weight| over all its pictures.
        limit = np.percentile(np.abs(np.concatenate(weights)), 99.5)
        for when, picture in zip(whens, pictures, strict=True):
            assert picture["clims"] == [pytest.approx((-limit, limit))], (layer, when)
        # The final picture shows the trained weights, and they moved from the initial ones.
        trained = last["state_dict"][key].numpy()
        assert np.allclose(np.sort(weights[-1]), np.sort(trained.ravel()), atol=1e-6), layer
        assert not np.allclose(np.sort(weights[0]), np.sort(weights[-1])), layer
