"""Every preset builds the network, optimizer, schedule and data the tutorial it reproduces
describes, and trains on the tiny data; what its comments, README and experiments/presets.py say
about it agrees with what it builds."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from digitlab.config import CONF_DIR
from digitlab.config.spec import check_config
from digitlab.training.build import build_datamodule, build_module, build_trainer

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
MNIST_NORM = (-0.1307 / 0.3081, (1 - 0.1307) / 0.3081)  # pixels 0 and 255 after /255, -mean, /std

# What each tutorial's network and input are, as facts about the built objects (not config keys):
# the network's parameter count (arithmetic beside it), its activation, and the values that a
# pixel of 0 and one of 255 become.
TUTORIALS = {
    # 784*128+128, 128*64+64, 64*10+10; pixels in [0, 1]
    "mxnet_mlp": (109_386, nn.ReLU, (0.0, 1.0)),
    # conv 1*20*5*5+20, 20*50*5*5+50, fc 50*4*4*500+500, 500*10+10; pixels in [0, 1]
    "mxnet_lenet": (431_080, nn.Tanh, (0.0, 1.0)),
    # conv 1*12*25+12, 12*25*25+25, fc 25*4*4*100+100, 100*10+10; x/80 - 0.4176
    "mxnet_jl_kaggle": (48_947, nn.Tanh, (-0.4176, 255 / 80 - 0.4176)),
    # 784*32+32, 32*10+10; pixels in [0, 1]
    "flux_mlp": (25_450, nn.Sigmoid, (0.0, 1.0)),
    # LeCun's LeNet-5 on 32x32: conv 6*25+6, 6*16*25+16, fc 400*120+120, 120*84+84, 84*10+10
    "mindspore_lenet5": (61_706, nn.ReLU, MNIST_NORM),
    # conv 1*32*25+32, 32*64*25+64, fc 64*4*4*512+512, 512*10+10
    "best": (582_026, nn.ReLU, MNIST_NORM),
    "kaggle_best": (582_026, nn.ReLU, MNIST_NORM),
    # convnet's own widths, not best's: conv 1*16*9, 16*16*9, 16*32*9, 32*32*9, fc 32*7*7*256
    # (no biases: batch norm follows), batch norms 2*(16+16+32+32+256), fc 256*10+10
    "best_convnet": (420_954, nn.ReLU, MNIST_NORM),
    "kaggle_best_convnet": (420_954, nn.ReLU, MNIST_NORM),
    # the records recipe's committee: kaggle_best's and kaggle_best_convnet's networks
    "kaggle_records": (582_026, nn.ReLU, MNIST_NORM),
    "kaggle_records_convnet": (420_954, nn.ReLU, MNIST_NORM),
    # conv 1*8*25+8, 8*16*25+16, fc 16*4*4*100+100, 100*10+10
    "fast": (30_134, nn.ReLU, MNIST_NORM),
    # the MXNet LeNet's width (the search's starting point), ReLU
    "search": (431_080, nn.ReLU, MNIST_NORM),
    # conv 1*24*25+24, 24*32*25+32, fc 32*4*4*256+256, 256*10+10 (tuomaso/train_mnist_fast's size)
    "gpu": (153_754, nn.ReLU, MNIST_NORM),
}


def compose_preset(name: str, *overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", [f"experiment={name}", *overrides], return_hydra_config=hydra)


def tiny(name: str, data_root: Path, *overrides: str):
    """The preset on the tiny data (240 training rows), on the CPU (CUDA graphs off: they need a
    GPU, tests/test_cuda_graphs.py covers them): counts of held-out rows that the real data
    affords are cut to 40; fractions stay the preset's own."""
    overrides = ("cuda_graphs=false", *overrides)
    cfg = compose_preset(name, f"data.root={data_root}", "trainer.accelerator=cpu", *overrides)
    cut = [
        f"data.{key}=40"
        for key in ("val_size", "test_size")
        if isinstance(cfg.data[key], int) and cfg.data[key] > 40
    ]
    return compose_preset(
        name, f"data.root={data_root}", "trainer.accelerator=cpu", *cut, *overrides
    )


def test_every_preset_is_described_by_the_tutorials_table():
    assert sorted(TUTORIALS) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_the_tutorial_network_and_input(preset, data_root):
    cfg = tiny(preset, data_root)
    check_config(cfg)
    module = build_module(cfg)  # model, optimizer and scheduler instantiated
    count, activation, (black, white) = TUTORIALS[preset]
    assert sum(p.numel() for p in module.net.parameters()) == count
    assert {type(m) for m in module.net.modules()} & {nn.ReLU, nn.Tanh, nn.Sigmoid} == {activation}

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    side = cfg.model.input_size
    assert x.shape[1:] == (1, side, side) and len(x) == len(y)
    # A pixel of 0 and one of 255 (the tiny digits hold both) become the tutorial's values.
    assert x.min().item() == pytest.approx(black, abs=1e-5)
    if side == 28:  # resizing to 32 blends neighbours: no pixel keeps 255 exactly
        assert x.max().item() == pytest.approx(white, abs=1e-5)
    assert module.net(x[:5]).shape == (5, 10)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_one_step_on_tiny_data(preset, data_root, tmp_path):
    """One Lightning step (data.steps_per_call optimizer steps) through the Trainer the run
    builds: the loss is finite and every parameter tensor moved."""
    cfg = tiny(
        preset,
        data_root,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
    )
    module = build_module(cfg)
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer = build_trainer(cfg, [], tmp_path)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = [not torch.equal(b, p) for b, p in zip(before, module.net.parameters(), strict=True)]
    assert all(moved), preset


# Settings a preset's header comment states, as "lr 0.1", "batch 100", "10 epochs", ...
STATED = {
    "optimizer.lr": r"\blr ([0-9.e-]+)",
    "optimizer.momentum": r"\bmomentum ([0-9.]+)",
    "optimizer.weight_decay": r"\bweight decay ([0-9.e-]+)",
    "data.batch_size": r"\bbatch (\d+)",
    "trainer.max_epochs": r"\b(\d+) epochs",
}


RECIPES = {"mxnet_mlp", "mxnet_lenet", "mxnet_jl_kaggle", "flux_mlp", "mindspore_lenet5", "fast"}


def header(preset: str) -> str:
    """The comment lines at the top of conf/experiment/<preset>.yaml, as one line."""
    lines = (CONF_DIR / "experiment" / f"{preset}.yaml").read_text().splitlines()
    comments = [line.lstrip("# ") for line in lines if line.startswith("#")]
    return " ".join(c for c in comments if c != "@package _global_")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_header_states_what_it_sets(preset):
    cfg = compose_preset(preset)
    text = header(preset)
    stated = {key: re.findall(pattern, text) for key, pattern in STATED.items()}
    for key, values in stated.items():
        for value in values:
            actual = OmegaConf.select(cfg, key)
            assert float(value.rstrip(".")) == pytest.approx(actual), (
                f"{preset}: its header says {key} {value}, it sets {actual}"
            )
    if preset in RECIPES:  # these presets state their recipe in numbers
        assert sum(map(len, stated.values())) >= 3, text


def load_presets_script():
    spec = importlib.util.spec_from_file_location("presets", ROOT / "experiments" / "presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEADLINES = load_presets_script().HEADLINES


def test_readme_and_the_presets_table_name_every_preset_and_its_target():
    readme = (ROOT / "README.md").read_text()
    for preset in PRESETS:
        assert f"`{preset}`" in readme or f"experiment={preset}" in readme, preset
    # The figure experiments/presets.py reports beside each preset is the one its YAML states.
    for preset, headline in HEADLINES.items():
        figure = re.search(r"\d+(?:\.\d+)? ?%|0\.\d+", headline).group(0)
        assert figure.replace(" ", "") in header(preset).replace(" ", ""), (preset, figure)


def conv_widths(net: nn.Module) -> list[int]:
    return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_the_presets_table_counts_only_runs_of_the_preset_as_it_is_now(fast, store, tmp_path):
    # A run of an earlier recipe of best (another network) must not be averaged into its row.
    from digitlab.training.run import train

    script = load_presets_script()
    recipe = script.preset_recipe("best")
    assert recipe["model._target_"] == "digitlab.models.LeNet" and "optimizer.lr" in recipe
    cut = [*fast, "logger.experiment_name=presets", "seed=1"]
    now = train(compose_preset("best", *cut), output_dir=tmp_path / "now")
    earlier = train(
        compose_preset("best", *cut, "model=convnet", "model.channels=[4,8]", "seed=2"),
        output_dir=tmp_path / "earlier",
    )
    client = MlflowClient(store["tracking_uri"])
    runs = {r: client.get_run(r) for r in (now["run_id"], earlier["run_id"])}
    # The tiny runs override sizes and epochs, so compare the recipe's network and optimizer.
    network = {k: v for k, v in recipe.items() if k.startswith(("model.", "optimizer."))}
    assert script.same_recipe(runs[now["run_id"]], network)
    assert not script.same_recipe(runs[earlier["run_id"]], network)


def test_a_run_counts_for_the_preset_whose_recipe_it_trained(store):
    # A run started as `experiment=best model=convnet ...` trained best_convnet's recipe (before
    # that preset had a name): it belongs in best_convnet's row, not in best's, and a run of
    # neither recipe belongs in no row.
    script = load_presets_script()
    client = MlflowClient(store["tracking_uri"])
    experiment = client.create_experiment("presets", artifact_location=store["artifact_location"])
    recipes = {name: script.preset_recipe(name) for name in ("best", "best_convnet")}
    started = {}
    for label, started_as, params in [
        ("best", "best", recipes["best"]),
        ("convnet as best", "best", recipes["best_convnet"]),
        ("neither", "best", {**recipes["best"], "trainer.max_epochs": "3"}),
    ]:
        run = client.create_run(experiment, tags={"choice.experiment": started_as})
        for key, value in {**params, "seed": "1"}.items():
            client.log_param(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        started[run.info.run_id] = label
    rows = {
        name: sorted(started[r.info.run_id] for r in runs)
        for name, runs in script.latest_runs(store["tracking_uri"]).items()
    }
    assert rows == {"best": ["best"], "best_convnet": ["convnet as best"]}


def test_best_is_what_readme_says(data_root):
    """README: a wider ReLU LeNet, on-device random rotation/shift/zoom, Nesterov SGD, cosine."""
    cfg = tiny("best", data_root)
    module = build_module(cfg)
    lenet = build_module(compose_preset("mxnet_lenet")).net
    assert all(b > a for a, b in zip(conv_widths(lenet), conv_widths(module.net), strict=True))
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    x, _ = datamodule.tensors["train"]
    moved = datamodule.augment(x, fill=float(x.min()), generator=torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    assert ((moved - x).abs().flatten(1).amax(1) > 0.1).all()  # every image moved its own way
    optimizer = module.optimizer_factory(module.parameters())
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    scheduler = module.scheduler_factory(optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == cfg.trainer.max_epochs  # decays over the whole run


def test_search_preset_searches_the_named_hyperparameters():
    cfg = compose_preset("search", "search.hidden=64", "search.filters.0=8", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {
        "optimizer.lr",
        "data.batch_size",
        "optimizer.momentum",
        "optimizer.weight_decay",
        "search.filters.0",
        "search.filters.1",
        "search.hidden",
    }
    net = build_module(compose_preset("search", "search.hidden=64", "search.filters.0=8")).net
    # the sampled width reaches the network
    assert conv_widths(net) == [8, 50]
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [64, 10]


def test_a_preset_value_can_still_be_overridden():
    assert compose_preset("mxnet_mlp", "optimizer.lr=0.5").optimizer.lr == 0.5
