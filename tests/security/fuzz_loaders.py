"""Random mutations of a real checkpoint, a stored config.yaml and an MLmodel, through every loader.

Run as a script (``python fuzz_loaders.py FOLDER CASES SEED``) so that its peak memory is its
own: it prints one JSON line with how the cases ended, the RSS once every loader's imports are
in (``warm_rss``: torch, MLflow and digitlab take most of a GB) and at its peak, and every case
that ended in anything but a result or a DigitlabError. The test (test_fuzz.py) asserts on that
line and on the marker folder, which no case may write into.
"""

from __future__ import annotations

import copy
import json
import random
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

from digitlab.config.resume import recipe_from_yaml
from digitlab.errors import DigitlabError
from digitlab.models import MLP
from digitlab.serving.model import load
from digitlab.serving.models import checked_data_path
from digitlab.training.checkpoints import network_from_checkpoint


def recipe() -> dict[str, Any]:
    """A run config as training stores it (the tiny MLP's)."""
    return {
        "data": {
            "_target_": "digitlab.data.datamodule.DigitDataModule",
            "source": {"_target_": "digitlab.data.sources.load_mnist", "_partial_": True},
            "root": "/data",
            "classes": 10,
            "val_size": 5000,
            "test_size": None,
            "split_seed": None,
            "folds": None,
            "fold": 0,
            "batch_size": 100,
            "eval_batch_size": 1000,
            "steps_per_call": 20,
            "scale": 255.0,
            "mean": 0.1307,
            "std": 0.3081,
            "augment": None,
        },
        "model": {
            "_target_": "digitlab.models.MLP",
            "hidden": [8],
            "activation": "relu",
            "input_size": 28,
        },
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        "scheduler": None,
        "trainer": {"max_epochs": 3, "precision": "32-true", "accelerator": "auto"},
        "seed": 42,
        "trusted_targets": [],
    }


def hostile_values(marker: Path) -> list[Any]:
    """Values an attacker puts in a stored recipe: code, interpolations, sizes, wrong types."""
    return [
        {"_target_": "builtins.open", "file": str(marker / "opened"), "mode": "w"},
        {
            "_target_": "digitlab.data.sources.load_idx",
            "folder": str(marker),
            "mirrors": ["http://127.0.0.1:9/"],
        },
        "digitlab.models.lenet.torch.load",
        "${oc.env:HOME}",
        f"${{oc.create:'{{_target_: builtins.open, file: {marker}/created, mode: w}}'}}",
        10**12,
        -(10**12),
        2**64,
        1e308,
        float("nan"),
        float("inf"),
        "x" * 5000,
        [[1] * 10] * 10,
        [1000000, 64],
        list(range(100_000)),
        [],
        {},
        True,
        None,
        "",
        0,
        -1,
        "1",
        ["a", {"b": 1}],
        str(marker),
    ]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``node`` (mappings and lists)."""
    found = [prefix] if prefix else []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        found += paths(value, (*prefix, key))
    return found


def mutate(node: dict, rng: random.Random, values: list[Any]) -> dict:
    """1 to 3 random changes: a value replaced, a key deleted, a key added, a type swapped."""
    node = copy.deepcopy(node)
    for _ in range(rng.randint(1, 3)):
        where = rng.choice(paths(node))
        parent = node
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        action = rng.random()
        if action < 0.55:
            parent[last] = copy.deepcopy(rng.choice(values))
        elif action < 0.7 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.85 and isinstance(parent, dict):
            name = rng.choice(["_target_", "_partial_", "_args_", "__class__", "extra", "root"])
            parent[name] = copy.deepcopy(rng.choice(values))
        else:  # the same value in another type
            value = parent[last]
            parent[last] = str(value) if not isinstance(value, str) else [value]
    return node


def state_dict(rng: random.Random) -> dict[str, Any]:
    weights = {f"net.{k}": v for k, v in MLP(hidden=[8]).state_dict().items()}
    roll = rng.random()
    if roll < 0.1:
        weights = {k: 7 for k in weights}
    elif roll < 0.2:
        weights = {i: v for i, v in enumerate(weights.values())}
    elif roll < 0.3:
        key = rng.choice(list(weights))
        weights[key] = torch.zeros(3, 3)
    return weights


def one_case(kind: str, folder: Path, rng: random.Random, values: list[Any]) -> str:
    """Run one mutated input through its loader: "result" or "refused" (DigitlabError)."""
    base = recipe()
    try:
        if kind == "checkpoint":
            path = folder / "case.ckpt"
            hparams = {"config": mutate(base, rng, values)}
            torch.save({"state_dict": state_dict(rng), "hyper_parameters": hparams}, path)
            network_from_checkpoint(path)
        elif kind == "config.yaml":
            text = yaml.safe_dump(mutate(base, rng, values))
            recipe_from_yaml(text, "run x's config.yaml").config()
        else:  # an MLmodel beside a good checkpoint, then the model as the server loads it
            model = folder / "model"
            (model / "data").mkdir(parents=True, exist_ok=True)
            torch.save(
                {"state_dict": state_dict(random.Random(0)), "hyper_parameters": {"config": base}},
                model / "data" / "model.ckpt",
            )
            mlmodel = {
                "flavors": {
                    "python_function": {
                        "loader_module": "digitlab.serving.model",
                        "data": "data/model.ckpt",
                        "env": {"virtualenv": "python_env.yaml"},
                    }
                },
                "model_uuid": "0" * 32,
            }
            (model / "MLmodel").write_text(yaml.safe_dump(mutate(mlmodel, rng, values)))
            load(str(checked_data_path(model, "models:/fuzz/1")))
        return "result"
    except DigitlabError as e:
        if "\n" in str(e):
            raise AssertionError(f"a refusal of more than one line: {e}") from None
        return "refused"


def main(folder: Path, cases: int, seed: int) -> None:
    marker = folder / "marker"
    marker.mkdir(parents=True, exist_ok=True)
    rng, values = random.Random(seed), hostile_values(marker)
    for kind in ("checkpoint", "config.yaml", "MLmodel"):  # imports every loader needs
        one_case(kind, folder, random.Random(0), [0])
    warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ended: dict[str, int] = {}
    failures: list[str] = []
    for number in range(cases):
        kind = ("checkpoint", "config.yaml", "MLmodel")[number % 3]
        try:
            result = one_case(kind, folder, rng, values)
            ended[result] = ended.get(result, 0) + 1
        except BaseException:  # anything but a result or one line is the finding
            failures.append(f"case {number} ({kind}): {traceback.format_exc(limit=3)[-600:]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = {"ended": ended, "warm_rss": warm, "peak_rss": peak, "failures": failures[:5]}
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
