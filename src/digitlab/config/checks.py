"""Config values checked before anything heavy is imported, each failure one line with its fix."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitlab.config.spec import check_run
from digitlab.config.targets import check_targets, trusted_targets
from digitlab.data.classes import class_names
from digitlab.errors import DigitlabError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Groups whose numbers reach the network, the optimizer or the data: an inf or NaN there trains
# a run that fails at its first step (or never learns), recorded as FAILED.
FINITE_GROUPS = ("data", "model", "optimizer", "scheduler")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _devices(value: Any) -> bool:
    """Lightning's forms: auto, a count >= 1, -1 (every device), a list of device indices, or
    the same as a string ("2", "0,1")."""
    if value == "auto" or (_whole(value) and (value >= 1 or value == -1)):
        return True
    if isinstance(value, ListConfig | list | tuple):
        return len(value) > 0 and all(_whole(v) and v >= 0 for v in value)
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        return False
    return _devices(numbers) if "," in value else _devices(numbers[0])


# Where and how this command runs (not what it trains, which the run schema checks:
# config/spec.py): (key, test, what the value must be); keys missing from a config are skipped.
RULES: list[tuple[str, Any, str]] = [
    (
        "trainer.devices",
        _devices,
        "an integer >= 1, -1 (every device), a list of device indices (e.g. [0, 1]) or auto",
    ),
    ("trainer.accelerator", lambda v: v in ACCELERATORS, "one of " + ", ".join(ACCELERATORS)),
    (
        "figures.filters_every_n_epochs",
        lambda v: _whole(v) and v >= 0,
        "an integer >= 0 (0: filters at the start and end only)",
    ),
    ("figures.samples", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("figures.mistakes", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("figures.probabilities", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    (
        "resume",
        lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
        "null, an MLflow run id or a .ckpt path",
    ),
]


def check_config(cfg: DictConfig) -> None:
    """Raise DigitlabError for the first value that cannot work."""
    check_targets(cfg, trusted_targets(cfg))
    if found := _first_non_finite(cfg):
        raise DigitlabError(f"{found[0]}={found[1]!r} is invalid: it must be a finite number")
    classes = OmegaConf.select(cfg, "data.classes", default=None)
    if classes is not None:
        class_names(OmegaConf.to_object(classes) if isinstance(classes, ListConfig) else classes)
    try:
        recipe = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # an interpolation that fails is reported where it is used
        recipe = None
    if isinstance(recipe, dict) and "model" in recipe and "data" in recipe:
        check_run(recipe)  # the recipe's keys: the run schema, as stored state is checked
    for key, test, wanted in RULES:
        value = OmegaConf.select(cfg, key, default="__absent__")
        if isinstance(value, str) and value == "__absent__":
            continue
        if not test(value):
            raise DigitlabError(f"{key}={value!r} is invalid: it must be {wanted}")
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1)
    if accumulate != 1 and OmegaConf.select(cfg, "data.steps_per_call", default=1) != 1:
        # Several optimizer steps per Lightning step (the fused path) step the optimizer
        # themselves: accumulation would change what a step is.
        raise DigitlabError(
            f"trainer.accumulate_grad_batches={accumulate!r} needs one optimizer step per "
            "Lightning step: add data.steps_per_call=1 (or raise data.batch_size instead)"
        )


def _first_non_finite(cfg: DictConfig) -> tuple[str, float] | None:
    """``(key, value)`` of the first inf or NaN in the FINITE_GROUPS, or None."""
    for group in FINITE_GROUPS:
        node = OmegaConf.select(cfg, group, default=None)
        if not isinstance(node, DictConfig):
            continue
        try:
            values = OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException:  # an interpolation that fails is reported where it is used
            continue
        if found := _non_finite(values, group):
            return found
    return None


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    items = (
        value.items()
        if isinstance(value, dict)
        else (enumerate(value) if isinstance(value, list) else ())
    )
    for name, item in items:
        if found := _non_finite(item, f"{key}.{name}"):
            return found
    return None
