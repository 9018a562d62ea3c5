"""Bad input, beyond docs/errors.md's table (tests/test_errors_doc.py runs each of its rows):
the full trace on request, answers given before torch is imported, and the value checks'
limits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_mnist
from digitlab.errors import DigitlabError

RAW = "MNIST/raw"


def test_full_trace_on_request(data_root, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "optimizer.lr=abc", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "DigitlabError" in result.stderr


def test_data_errors_answer_without_importing_torch(tmp_path):
    """The readers validate with numpy; torch (seconds to import) is loaded only for good files."""
    root = write_mnist(tmp_path)
    (root / RAW / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    code = (
        "import sys\n"
        "from digitlab.data.sources import read_data\n"
        "from digitlab.errors import DigitlabError\n"
        "from omegaconf import OmegaConf\n"
        "from digitlab.config import CONF_DIR\n"
        "node = OmegaConf.load(CONF_DIR / 'data' / 'mnist.yaml')\n"
        f"node.root = {str(root)!r}\n"
        "node.source.download = False\n"
        "try:\n    read_data(node)\n"
        "except DigitlabError:\n    print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_the_allow_list_matches_whole_module_names():
    from digitlab.config.targets import check_targets, is_allowed
    from digitlab.errors import DigitlabError

    check_targets(
        {"model": {"_target_": "digitlab.models.MLP"}, "optimizer": {"_target_": "torch.optim.SGD"}}
    )
    with pytest.raises(DigitlabError, match="model.layers.0._target_=builtins.exec is not allowed"):
        check_targets({"model": {"layers": [{"_target_": "builtins.exec"}]}})
    assert is_allowed("mypkg.nets.Tiny", ["mypkg"]) and is_allowed("mypkg.nets.Tiny", ["mypkg."])
    assert not is_allowed("mypkg_evil.run", ["mypkg"]) and not is_allowed("digitlabx.run")


def _built_targets(*groups: str) -> set[str]:
    """Every ``_target_`` the files of these config groups name."""
    import yaml

    from digitlab.config import CONF_DIR

    def targets(node) -> list[str]:
        if isinstance(node, dict):
            found = [node["_target_"]] if "_target_" in node else []
            return found + [t for value in node.values() for t in targets(value)]
        if isinstance(node, list):
            return [t for value in node for t in targets(value)]
        return []

    return {
        target
        for group in groups
        for path in (CONF_DIR / group).glob("*.yaml")
        for target in targets(yaml.safe_load(path.read_text()))
    }


def test_added_keys_are_checked_against_the_arguments_the_source_declares():
    """The argument names a target takes before torch is imported (what `+key` and a network's
    keys are checked against: digitlab's networks' schema, else read from the source) are those
    inspect.signature gives, for every target the configs name; None where the source cannot
    tell (**kwargs)."""
    import inspect

    from hydra.utils import get_object

    from digitlab.config.spec import NETWORKS
    from digitlab.config.spec import arguments as argument_names

    # What the network, optimizer, scheduler, data source and Trainer take is read in full; a
    # callback may inherit its __init__ (None: not checked early), but is never read wrong.
    built = {
        *_built_targets("model", "optimizer", "scheduler", "data"),
        "lightning.pytorch.Trainer",
    }
    assert {f"digitlab.models.{name}" for name in NETWORKS} <= built  # each network's schema
    assert {
        "torch.optim.SGD",
        "digitlab.models.LeNet",
        "digitlab.data.sources.load_idx",
        "torch.optim.lr_scheduler.OneCycleLR",
    } <= built
    for target in sorted(built | _built_targets("callbacks")):
        parameters = inspect.signature(get_object(target)).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            expected = None
        else:
            expected = {
                p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
        names = argument_names(target)
        read = None if names is None else set(names)
        assert read == expected or (read is None and target not in built), target
    assert argument_names("digitlab.models.NoSuchNet") is None
    assert argument_names("nosuchpackage.Net") is None


LENET = "digitlab.models.LeNet"


@pytest.mark.parametrize(
    "config, refused",
    [
        ({"trainer": {"devices": 0}}, "trainer.devices=0 is invalid"),
        ({"trainer": {"devices": "0"}}, "trainer.devices='0' is invalid"),
        ({"trainer": {"devices": []}}, "trainer.devices=[] is invalid"),
        ({"trainer": {"devices": [-1]}}, "trainer.devices=[-1] is invalid"),
        ({"trainer": {"devices": "one"}}, "trainer.devices='one' is invalid"),
        ({"seed": 2**32}, "seed=4294967296 is invalid"),
        ({"seed": True}, "seed=True is invalid"),
        ({"data": {"split_seed": -5}}, "data.split_seed=-5 is invalid"),
        ({"model": {"_target_": LENET, "channels": [8, 0]}}, "model.channels=[8, 0] is invalid"),
        ({"model": {"_target_": LENET, "hidden": 500}}, "model.hidden=500 is invalid"),
        ({"model": {"_target_": LENET, "kernel_size": 2.5}}, "model.kernel_size=2.5 is invalid"),
        (
            {"optimizer": {"_target_": "torch.optim.Adam", "betas": [0.9, float("nan")]}},
            "optimizer.betas.1=nan is invalid: it must be a finite number",
        ),
        (
            {
                "scheduler": {
                    "_target_": "torch.optim.lr_scheduler.OneCycleLR",
                    "max_lr": float("-inf"),
                }
            },
            "scheduler.max_lr=-inf is invalid: it must be a finite number",
        ),
        (
            {
                "trainer": {"devices": 2},
                "seed": 0,
                "data": {"split_seed": None, "std": 1.0},
                "model": {"_target_": LENET, "channels": [1], "hidden": [], "kernel_size": 3},
            },
            None,
        ),
        # A network of the user's (trusted_targets) may mean other things by these names.
        (
            {"model": {"_target_": "usernets.Tiny", "hidden": 16}, "trusted_targets": ["usernets"]},
            None,
        ),
        ({"trainer": {"devices": [0, 1]}, "seed": 2**32 - 1}, None),
        *(({"trainer": {"devices": d}}, None) for d in ("auto", -1, "0,1", "2", "-1")),
    ],
)
def test_value_ranges(config, refused):
    """What numpy's and torch's seeding, Lightning's devices and the networks' widths accept
    (checked in-process: test_bad_input_gets_one_line_and_exit_1 runs the command line)."""
    from omegaconf import OmegaConf

    from digitlab.config.spec import check_config
    from digitlab.errors import DigitlabError

    recipe = {  # a valid run recipe, which each case changes
        "model": {"_target_": "digitlab.models.MLP", "hidden": [8]},
        "data": {"scale": 255.0, "mean": 0.0, "std": 1.0},
    }
    cfg = OmegaConf.merge(recipe, config)
    if refused is None:
        check_config(cfg)
    else:
        with pytest.raises(DigitlabError) as e:
            check_config(cfg)
        assert str(e.value).startswith(refused), e.value


def test_a_file_that_is_no_picture_names_the_formats_that_are_read(tmp_path):
    """Each format the message names is read (a digit in it found), and the message says so."""
    from PIL import Image

    from digitlab.serving.mnistify import read_digit

    digit = np.zeros((40, 40), np.uint8)
    digit[10:30, 18:22] = 255
    formats = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WebP": "webp"}
    for name, suffix in {**formats, "TIFF": "tif"}.items():
        path = tmp_path / f"one.{suffix}"
        Image.fromarray(digit).save(path, name.upper())
        assert read_digit(path).shape == (28, 28), name
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(DigitlabError) as refused:
        read_digit(notes)
    assert str(refused.value) == (
        f"{notes}: not a readable picture; give pictures of digits as PNG, JPEG, GIF, BMP, WebP "
        "or TIFF files"
    )
