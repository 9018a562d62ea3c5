"""A data source from a stored config (a resumed run's, an ensemble member's) is data: it reads
files under the data root this command gives, never downloads from mirrors it names, never
reaches outside the root, and is built only as what its key says it is."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from digitlab.config.resume import resumed_config
from digitlab.errors import DigitlabError


def crafted_source(folder: str, **more) -> dict:
    """A load_idx source whose file table and mirror the attacker chose."""
    entry = ["evil.sh", "0" * 32]
    files = dict.fromkeys(("train_images", "train_labels", "test_images", "test_labels"), entry)
    return {
        "_target_": "digitlab.data.sources.load_idx",
        "folder": folder,
        "files": files,
        "mirrors": ["http://127.0.0.1:9/"],
        "download": True,
        **more,
    }


@pytest.mark.parametrize("folder", ["../../victim", "/tmp/victim", "a/../../victim", "~/victim"])
def test_a_folder_outside_the_root_is_refused_before_anything_is_made(folder, tmp_path):
    from digitlab.data.sources import load_idx

    source = crafted_source(folder)
    with pytest.raises(DigitlabError, match="leaves the data root"):
        load_idx(tmp_path / "root", folder, source["files"], source["mirrors"], download=True)
    assert not (tmp_path / "root").exists() and not (tmp_path / "victim").exists()


def test_a_resumed_config_never_keeps_the_stored_mirrors_or_download(make_cfg):
    cfg = make_cfg("data.source.download=false")
    stored = OmegaConf.to_container(cfg, resolve=True)
    archive = {"archive": "http://127.0.0.1:9/gzip.zip", "archive_md5": "0" * 32}
    stored["data"]["source"] = crafted_source("MNIST/raw", **archive)
    merged = resumed_config(cfg, stored, [], "crafted.ckpt")
    assert merged.data.source.mirrors is None  # this command's source names none of its own
    assert merged.data.source.download is False  # this command's, not the store's
    assert "archive" not in merged.data.source and "archive_md5" not in merged.data.source


def test_holdout_of_a_source_without_a_download_key_never_downloads(tmp_path):
    from digitlab.jobs.inputs import holdout_images

    source = crafted_source("MNIST/raw")
    del source["download"]  # load_idx downloads by default: the holdout turns it off anyway
    stored, command = tmp_path / "stored", tmp_path / "command"  # the run's root, --root
    stored.mkdir(), command.mkdir()
    config = {"seed": 1, "data": {"val_size": 40, "root": str(stored), "source": source}}
    with pytest.raises(DigitlabError, match="does not exist") as refused:
        holdout_images([("crafted.ckpt", config)], command)
    assert "127.0.0.1:9" not in str(refused.value)
    assert list(stored.iterdir()) == [] and list(command.iterdir()) == []


def test_a_nested_target_is_built_only_as_its_own_kind(make_cfg):
    from digitlab.training.build import build_datamodule

    cfg = make_cfg("+data.augment._target_=digitlab.data.sources.load_mnist")
    with pytest.raises(DigitlabError, match=r"data.augment._target_=.*not an augmentation"):
        build_datamodule(cfg)
