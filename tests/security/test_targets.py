"""The ``_target_`` check is on what a name resolves to: no attribute path, however it walks
through digitlab's modules, torch.optim or Lightning's callbacks, resolves as allowed unless it
lands on a callable of the registry."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

import digitlab
from digitlab.config.targets import KINDS, Refused, registry, resolve
from digitlab.errors import DigitlabError

# Modules whose import does more than define things (the command line's entry point).
SKIP = {"digitlab.__main__"}
ROOTS = ["torch.optim", "torch.optim.lr_scheduler", "lightning.pytorch.callbacks"]


def modules() -> Iterator[ModuleType]:
    for info in pkgutil.walk_packages(digitlab.__path__, "digitlab."):
        if info.name not in SKIP:
            yield importlib.import_module(info.name)
    for name in ROOTS:
        yield importlib.import_module(name)


def public(namespace) -> Iterator[tuple[str, object]]:
    """A module's or class's own public names (``vars``: no lazy import is triggered)."""
    for name, value in list(vars(namespace).items()):
        if not name.startswith("_"):
            yield name, value


def attribute_paths(depth: int = 3) -> Iterator[tuple[str, object]]:
    """``module.a``, ``module.a.b``, ... up to ``depth`` steps from the modules above, stepping
    on through modules and classes: the walks Hydra's ``_locate`` can take from an allowed name.
    Each module or class is walked once (by the first path that reaches it): what a name can
    resolve to depends on the object, not on the path that led there."""
    seen: set[int] = set()
    frontier = [(module.__name__, module) for module in modules()]
    for _ in range(depth):
        reached = []
        for path, namespace in frontier:
            if id(namespace) in seen:
                continue
            seen.add(id(namespace))
            for name, value in public(namespace):
                yield f"{path}.{name}", value
                if inspect.ismodule(value) or inspect.isclass(value):
                    reached.append((f"{path}.{name}", value))
        frontier = reached


def test_no_attribute_path_resolves_as_allowed_outside_the_registry():
    walked = dict(attribute_paths())  # imports every module: all of digitlab's are registered
    registered = {id(obj) for kind in KINDS for obj in registry(kind)}
    paths, accepted = list(walked), set()
    # The walk reaches the code that crafted checkpoints reached before the check was on what
    # a name resolves to.
    import logging

    import torch

    reached = {id(value) for value in walked.values()}
    assert {id(logging.basicConfig), id(torch.load), id(torch.serialization.io.BytesIO)} <= reached
    for path in paths:
        try:
            obj = resolve(path, KINDS)
        except Refused:
            continue
        assert id(obj) in registered, f"{path} resolves to {obj!r}, outside the registry"
        accepted.add(id(obj))
    assert accepted == registered  # and every registered callable is reachable by its name
    print(f"{len(paths)} paths walked, {len(accepted)} callables accepted")


@pytest.mark.parametrize(
    "target",
    [
        "digitlab.cli.train.logging.basicConfig",
        "digitlab.models.mlp.torch.load",
        "digitlab.models.LeNet.__init__",
        "digitlab.models.lenet.__builtins__",
        "torch.optim.SGD.step",
        "digitlab.models.mlp.nn.Module",
        "torch.optim",
    ],
)
def test_a_walk_to_other_code_is_refused_by_what_it_resolves_to(target):
    with pytest.raises(Refused):
        resolve(target, KINDS)


def test_a_registered_name_of_one_kind_is_refused_as_another():
    assert resolve("digitlab.models.lenet.LeNet", ["network"]) is digitlab.models.LeNet
    with pytest.raises(Refused, match="not an optimizer digitlab builds"):
        resolve("digitlab.models.LeNet", ["optimizer"])


def test_a_users_trusted_package_allows_only_what_it_defines(tmp_path, monkeypatch):
    """``trusted_targets=[trustednets]``: a class defined there is accepted; a name that walks out
    of it (``trustednets.os.system``) or a function it merely imported is refused."""
    (tmp_path / "trustednets.py").write_text(
        "import os\nfrom os import system\n\nclass Tiny:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # A module of its own name: an imported module stays in sys.modules for the tests after.
    assert resolve("trustednets.Tiny", ["network"], ["trustednets"]).__name__ == "Tiny"
    for target in ("trustednets.os.system", "trustednets.system"):
        with pytest.raises(Refused, match="resolves to posix.system"):
            resolve(target, ["network"], ["trustednets"])


def test_a_saved_network_takes_plain_values_only():
    """A checkpoint's model config: one target, no nested call, no interpolation."""
    from digitlab.config.spec import read_run
    from digitlab.training.checkpoints import build_network

    recipe = {"data": {"scale": 255.0, "mean": 0.0, "std": 1.0}}
    nested = {"_target_": "digitlab.models.MLP", "hidden": {"_target_": "digitlab.models.MLP"}}
    with pytest.raises(DigitlabError, match=r"model.hidden=.* not a mapping \(nested code"):
        read_run({**recipe, "model": nested}, "checkpoint x")
    interpolated = {"_target_": "digitlab.models.MLP", "hidden": "${oc.env:HOME}"}
    with pytest.raises(DigitlabError, match=r"model.hidden=.* not an interpolation"):
        read_run({**recipe, "model": interpolated}, "checkpoint x")
    plain = read_run({**recipe, "model": {"_target_": "digitlab.models.MLP", "hidden": [8]}}, "x")
    assert type(build_network(plain.model)).__name__ == "MLP"


def test_every_network_callback_and_reader_digitlab_offers_is_registered_as_its_kind():
    """What ``models.__all__``, ``callbacks.__all__`` and the data readers offer is marked
    ``@buildable`` where it is defined; a forgotten mark would refuse the config naming it."""
    from digitlab import callbacks, models
    from digitlab.data import augment, datamodule, sources

    offered = {
        "network": [getattr(models, name) for name in models.__all__],
        "callback": [getattr(callbacks, name) for name in callbacks.__all__],
        "data source": [
            f for name, f in vars(sources).items() if name.startswith("load_") and callable(f)
        ],
        "data module": [datamodule.DigitDataModule],
        "augmentation": [augment.RandomAffine],
    }
    for kind, objs in offered.items():
        assert objs
        for obj in objs:
            assert any(obj is known for known in registry(kind)), f"{obj} is not a {kind}"
