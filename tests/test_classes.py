"""The data set declares its classes; nothing else counts to ten. A 47-class set in EMNIST's IDX
layout (every image stored transposed) trains, predicts, serves, registers and draws its figures
with its data YAML alone; every IDX data YAML reads its files by its own file table."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from conftest import copy_store, fast_config
from digitlab.config import CONF_DIR, config_groups, register_resolvers
from digitlab.config.classes import class_names
from digitlab.data.sources import IDX_PARTS, read_data
from digitlab.errors import DigitlabError
from synthetic import synthetic_classes, write_idx_set

EMNIST_CLASSES = 47


def write_set(root: Path, data, classes: int) -> dict[str, np.ndarray]:
    """``data``'s four files (its file table) under ``root``, as its reader expects them."""
    names = {part: data.source.files[part][0] for part in IDX_PARTS}
    transposed = bool(data.source.get("transpose"))
    return write_idx_set(root / data.source.folder, names, classes, transposed, 300, 100)


def composed(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


IDX_SETS = [
    name
    for name in config_groups(CONF_DIR)["data"]
    if composed(f"data={name}").data.source._target_.endswith(".load_idx")
]


@pytest.mark.parametrize("name", IDX_SETS)
def test_every_idx_data_yaml_reads_its_files_upright_by_its_own_table(name, tmp_path):
    cfg = composed(f"data={name}", f"data.root={tmp_path}", "data.source.download=false")
    classes = class_names(list(cfg.data.classes) if not isinstance(cfg.data.classes, int) else 10)
    written = write_set(tmp_path, cfg.data, len(classes))
    data = read_data(cfg.data)
    assert np.array_equal(data.train_images.numpy(), written["train_images"])
    assert np.array_equal(data.test_labels.numpy(), written["test_labels"])
    assert len(data.files) == 4 and all(
        f.parent == tmp_path / cfg.data.source.folder for f in data.files
    )


def test_the_emnist_yaml_names_47_classes_in_label_order():
    classes = composed("data=emnist_balanced").data.classes
    assert len(classes) == EMNIST_CLASSES and len(set(classes)) == EMNIST_CLASSES
    assert classes[:11] == [*"0123456789", "A"] and classes[-1] == "t"


@pytest.fixture(scope="module")
def emnist_run(migrated_db, tmp_path_factory):
    """One 47-class run on synthetic EMNIST-layout files: model logged, registered, figures on."""
    from digitlab.training.run import train

    folder = tmp_path_factory.mktemp("emnist")
    root = folder / "data"
    cfg = composed("data=emnist_balanced", f"data.root={root}")
    write_set(root, cfg.data, EMNIST_CLASSES)
    cfg = fast_config(
        root,
        copy_store(folder, migrated_db),
        "data=emnist_balanced",
        "model=mlp",
        "trainer.max_epochs=3",
        "optimizer=adam",
        "optimizer.lr=0.01",
        "logger.log_model=true",
        "logger.register_as=letters",
        "figures.enabled=true",
        "figures.samples=8",
    )
    result = train(cfg, output_dir=folder / "job", choices={"data": "emnist_balanced"})
    return result, cfg, root, folder


def test_a_47_class_run_trains_a_47_wide_network_and_learns(emnist_run):
    from digitlab.training.checkpoints import network_from_checkpoint

    result, *_ = emnist_run
    net, config = network_from_checkpoint(result["best_checkpoint"])
    assert net(__import__("torch").zeros(2, 1, 28, 28)).shape == (2, EMNIST_CLASSES)
    assert len(config["data"]["classes"]) == EMNIST_CLASSES
    # Upright images are told apart: far above the 1-in-47 of guessing.
    assert result["metrics"]["test/acc"] > 0.5


def test_a_47_class_model_serves_47_probabilities_and_is_registered(emnist_run):
    import mlflow
    from mlflow.models import Model

    result, cfg, root, _ = emnist_run
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)  # runs:/ and models:/ resolve through it
    info = Model.load(f"runs:/{result['run_id']}/model")
    outputs = {o["name"]: o["tensor-spec"]["shape"] for o in info.signature.outputs.to_dict()}
    assert list(outputs["probabilities"]) == [-1, EMNIST_CLASSES]
    model = mlflow.pyfunc.load_model("models:/letters@best")
    images, labels = synthetic_classes(20, EMNIST_CLASSES, 1)
    answer = model.predict(images)
    assert answer["probabilities"].shape == (20, EMNIST_CLASSES)
    assert (answer["digit"] == labels).mean() > 0.5
    client = MlflowClient(cfg.logger.tracking_uri)
    (version,) = client.search_model_versions("name = 'letters'")
    assert version.run_id == result["run_id"]


def test_a_47_class_prediction_writes_a_column_per_class_and_names_pictures(emnist_run):
    from digitlab.jobs.predict import predict

    result, cfg, root, folder = emnist_run
    out = folder / "probabilities.csv"
    written = predict(
        checkpoint=result["best_checkpoint"], data="emnist_balanced", root=root, out=out
    )
    with open(out) as f:
        header = next(csv.reader(f))
    names = list(cfg.data.classes)
    assert header == [f"p{name}" for name in names] and written.n == 100
    assert written.accuracy > 0.5  # the test files are read upright, as in training


def test_a_47_class_run_draws_its_figures_with_class_names(emnist_run):
    result, cfg, *_ = emnist_run
    client = MlflowClient(cfg.logger.tracking_uri)
    drawn = {
        f.path
        for folder in ("figures/data", "figures/predictions")
        for f in client.list_artifacts(result["run_id"], folder)
    }
    for name in ("label_histogram", "confusion_matrix", "per_class_accuracy", "probabilities"):
        assert any(name in path for path in drawn), (name, drawn)


def test_a_label_beyond_the_classes_is_one_line(make_cfg):
    from digitlab.training.build import build_datamodule

    cfg = make_cfg("data.classes=5")
    with pytest.raises(DigitlabError) as e:  # the reader names the file, before torch
        build_datamodule(cfg).split()
    assert re.search(
        r"labels-idx1-ubyte.gz has a label \d outside 0-4, the 5 classes", str(e.value)
    )
    assert "list every class in data.classes" in str(e.value) and "\n" not in str(e.value)


def test_a_model_num_classes_is_refused_in_one_line(make_cfg):
    """The data set's classes give the network's width: the schema refuses one set by hand."""
    from digitlab.config.spec import check_config

    with pytest.raises(DigitlabError, match=r"^model\.num_classes=7 is invalid: it must be absent"):
        check_config(make_cfg("+model.num_classes=7"))


@pytest.mark.parametrize(
    ("classes", "problem"),
    [(1, "is invalid"), ("abc", "is invalid"), (["a", "b", "a"], "names the class 'a' twice")],
)
def test_bad_classes_are_one_line(classes, problem):
    with pytest.raises(DigitlabError, match=f"data.classes.*{problem}"):
        class_names(classes)


def test_a_network_of_fixed_width_against_the_classes_is_one_line():
    import torch

    from digitlab.training.build import check_output_width

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    check_output_width(net, class_names(10), 28)  # as wide as the classes: accepted
    with pytest.raises(DigitlabError, match="gives 10 outputs but the data set has 47 classes"):
        check_output_width(net, class_names(47), 28)


def test_ensemble_members_of_other_classes_are_one_line():
    from types import SimpleNamespace

    from digitlab.jobs.ensemble import same_classes

    digits = SimpleNamespace(name="run-a", config={"data": {"classes": 10}})
    old = SimpleNamespace(name="run-old", config={"data": {}})  # stored before classes: ten
    letters = SimpleNamespace(name="run-b", config={"data": {"classes": ["x", "y", "z"]}})
    assert same_classes([digits, old]) == class_names(10)
    with pytest.raises(DigitlabError, match="members differ in their classes: run-a has 10"):
        same_classes([digits, letters])


def test_a_run_stored_before_classes_and_the_data_module_target_still_builds(make_cfg, data_root):
    """Its data node: no _target_, no classes, the source holding the old machine's root and
    no _partial_: read from this command's root, ten classes."""
    from omegaconf import OmegaConf

    from digitlab.training.build import build_datamodule

    cfg = make_cfg()
    old = OmegaConf.to_container(cfg, resolve=True)
    for key in ("_target_", "classes"):
        del old["data"][key]
    old["data"]["source"] = {
        "_target_": "digitlab.data.sources.load_mnist",
        "root": "/old/machine/data",
        "download": False,
    }
    datamodule = build_datamodule(OmegaConf.create(old))
    assert datamodule.classes == class_names(10) and len(datamodule.split()["test"][1]) == 80


@pytest.mark.parametrize("classes", [[True, False], ["a,b", "c"], ["a", " "]])
def test_class_names_that_cannot_be_shown_or_written_are_one_line(classes):
    with pytest.raises(DigitlabError, match="data.classes"):
        class_names(classes)
