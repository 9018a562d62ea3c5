"""Stored state is data: a crafted checkpoint or store config is parsed into the run schema
(digitlab.config.spec.read_run) and refused in one line before anything is resolved, built,
allocated, read or downloaded."""

from __future__ import annotations

import os
import resource
import zipfile
from pathlib import Path

import pytest
import torch
from fuzz_loaders import recipe

from digitlab.config.resume import recipe_from_yaml
from digitlab.config.spec import read_run
from digitlab.errors import DigitlabError
from digitlab.jobs.inputs import data_config, images_for
from digitlab.jobs.resume import stored_config
from digitlab.models import MLP
from digitlab.training.checkpoints import (
    MAX_CHECKPOINT_BYTES,
    load_checkpoint,
    network_from_checkpoint,
)


def save(path: Path, config, weights=None) -> Path:
    weights = weights or {f"net.{k}": v for k, v in MLP(hidden=[8]).state_dict().items()}
    torch.save({"state_dict": weights, "hyper_parameters": {"config": config}}, path)
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def test_resume_never_builds_a_nested_target_of_a_stored_config(tmp_path):
    """A stored model.activation naming load_idx with a folder and mirror of the attacker's
    choosing: resume= refuses it while reading, and nothing is downloaded or written."""
    victim = tmp_path / "site-packages"
    config = recipe()
    config["model"]["activation"] = {
        "_target_": "digitlab.data.sources.load_idx",
        "root": str(victim),
        "folder": ".",
        "files": {"train_images": ["evil.pth", "0" * 32]},
        "mirrors": ["http://127.0.0.1:9/"],
    }
    path = save(tmp_path / "crafted.ckpt", config)
    with pytest.raises(DigitlabError) as refused:
        stored_config(str(path), f"sqlite:///{tmp_path}/mlflow.db")
    assert "model.activation=" in one_line(refused) and "refused, nothing was run" in str(
        refused.value
    )
    assert not victim.exists()


def test_a_stored_environment_interpolation_is_refused_not_resolved(monkeypatch):
    monkeypatch.setenv("DIGITLAB_TEST_SECRET", "hunter2")
    config = recipe()
    config["optimizer"]["lr"] = "${oc.env:DIGITLAB_TEST_SECRET}"
    import yaml

    with pytest.raises(DigitlabError) as refused:
        recipe_from_yaml(yaml.safe_dump(config), "run x's config.yaml")
    assert "hunter2" not in one_line(refused) and "optimizer.lr=" in str(refused.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c["data"].update(classes=10**12), "data.classes"),
        (lambda c: c["model"].update(hidden=[1_000_000, 64]), "model.hidden"),
        (lambda c: c["model"].update(_partial_=True), "model._partial_"),
        (lambda c: c["model"].pop("_target_"), "model._target_ is missing"),
        (lambda c: c["data"].update(std="x"), "data.std='x'"),
        (lambda c: c["data"].update(std=0), "data.std=0"),
        (lambda c: c["data"].pop("scale"), "data.scale is missing"),
        (lambda c: c.update(data=[1, 2]), "data=[1, 2]"),
    ],
)
def test_a_crafted_recipe_is_refused_in_one_line_before_anything_is_built(tmp_path, change, key):
    config = recipe()
    change(config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DigitlabError) as refused:
        network_from_checkpoint(save(tmp_path / "crafted.ckpt", config))
    assert key in one_line(refused)
    # nothing of the asked-for size was allocated (a 10**12-class or 10**6-wide network)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


@pytest.mark.parametrize(
    "weights",
    [
        {"net.layers.1.weight": 7},
        {0: torch.zeros(8, 784)},
        {"net.layers.1.weight": torch.zeros(3, 3)},
    ],
    ids=["ints", "int keys", "wrong shape"],
)
def test_a_state_dict_of_other_things_is_refused_in_one_line(tmp_path, weights):
    with pytest.raises(DigitlabError) as refused:
        network_from_checkpoint(save(tmp_path / "crafted.ckpt", recipe(), weights))
    assert "refused" in one_line(refused) or "another architecture" in str(refused.value)


def test_a_deflated_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    """A 1 MB file that would inflate to MAX_CHECKPOINT_BYTES and more."""
    path = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w") as member:
            chunk = bytes(2**20)
            for _ in range(MAX_CHECKPOINT_BYTES // 2**20 + 8):
                member.write(chunk)
    assert path.stat().st_size < 2 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DigitlabError, match="compressed or oversized") as refused:
        load_checkpoint(path)
    one_line(refused)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_a_recompressed_real_checkpoint_is_refused(tmp_path):
    good = save(tmp_path / "good.ckpt", recipe())
    squeezed = tmp_path / "squeezed.ckpt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item))
    network_from_checkpoint(good)  # the original loads
    with pytest.raises(DigitlabError, match="compressed"):
        load_checkpoint(squeezed)


def test_a_stored_data_root_is_never_read(tmp_path, data_root, monkeypatch):
    """Prediction reads this command's data root (--root, else $DIGITLAB_DATA), never the run's
    stored data.root, which may name a folder of the attacker's choosing."""
    config = recipe()
    config["data"]["root"] = str(tmp_path / "attacker")
    spec = read_run(config, "checkpoint x").config()
    assert "root" not in spec["data"]
    monkeypatch.setenv("DIGITLAB_DATA", str(data_root))
    images, labels, _ = images_for("mnist", None, [("x", spec)])
    assert len(images) == len(labels) > 0
    assert not (tmp_path / "attacker").exists()


def test_a_data_root_with_commas_and_quotes_is_taken_as_it_is(tmp_path):
    root = tmp_path / "a,b'c\"d]"
    node = data_config("mnist", root)
    assert node.root == str(root)


def test_a_stored_file_path_is_refused():
    config = recipe()
    config["data"]["source"] = {
        "_target_": "digitlab.data.sources.load_kaggle",
        "_partial_": True,
        "file": "/etc/passwd",
    }
    with pytest.raises(DigitlabError, match="is a path"):
        read_run(config, "checkpoint x")


def test_the_stored_trust_mirrors_and_downloads_are_never_read():
    config = recipe()
    config["trusted_targets"] = ["os"]
    config["data"]["source"].update(download=True, mirrors=["http://127.0.0.1:9/"], root="/")
    spec = read_run(config, "checkpoint x").config()
    assert "trusted_targets" not in spec
    assert set(spec["data"]["source"]) == {"_target_", "_partial_"}
    assert os.sep not in str(spec["data"]["source"])


def test_a_stored_argument_digitlabs_network_lacks_is_refused_by_the_schema():
    """A crafted recipe that gives digitlab's LeNet an argument it has no parameter for is
    refused as it is read, before any class is looked up or built."""
    config = recipe()
    config["model"] = {"_target_": "digitlab.models.LeNet", "hiden": [8]}
    with pytest.raises(
        DigitlabError, match=r"^checkpoint x: model.hiden: .*did you mean model.hidden"
    ):
        read_run(config, "checkpoint x")
