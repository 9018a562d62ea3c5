"""Config values checked before anything heavy is imported, each failure one line with its fix."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitlab.config.targets import check_targets, trusted_targets
from digitlab.data.classes import class_names
from digitlab.errors import DigitlabError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# numpy's and torch's generators take unsigned 32-bit seeds; outside, seeding raises mid-start.
SEED_MAX = 2**32 - 1
# Groups whose numbers reach the network, the optimizer or the data: an inf or NaN there trains
# a run that fails at its first step (or never learns), recorded as FAILED.
FINITE_GROUPS = ("data", "model", "optimizer", "scheduler")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seed(value: Any) -> bool:
    return _whole(value) and 0 <= value <= SEED_MAX


def _widths(value: Any) -> bool:
    """Layer widths: a list of integers >= 1 (a 0-wide layer builds, and trains nothing)."""
    return isinstance(value, ListConfig | list | tuple) and all(_whole(v) and v >= 1 for v in value)


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


# (key, test, what the value must be); keys missing from a config are skipped.
RULES: list[tuple[str, Any, str]] = [
    ("seed", _seed, f"an integer from 0 to {SEED_MAX} (numpy's and torch's seed range)"),
    (
        "data.split_seed",
        lambda v: v is None or _seed(v),
        f"null or an integer from 0 to {SEED_MAX}",
    ),
    ("data.batch_size", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.steps_per_call", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.scale", lambda v: _number(v) and v > 0, "a number > 0"),
    ("data.mean", _number, "a number"),
    ("data.std", lambda v: _number(v) and v > 0, "a number > 0"),
    (
        "model.input_size",
        lambda v: _whole(v) and 8 <= v <= 256,
        "an image side in pixels, e.g. 28 or 32",
    ),
    (
        "data.val_size",
        lambda v: (_whole(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1),
        "a fraction in (0, 1) or a count >= 1",
    ),
    (
        "data.test_size",
        lambda v: v is None or (_whole(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1),
        "null, a fraction in (0, 1) or a count >= 1",
    ),
    (
        "data.folds",
        lambda v: v is None or (_whole(v) and v >= 2),
        "null (one validation holdout) or an integer >= 2 (K-fold cross-validation)",
    ),
    ("optimizer.lr", lambda v: _number(v) and v > 0, "a number > 0, e.g. 0.1"),
    ("optimizer.momentum", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("trainer.max_epochs", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    (
        "trainer.devices",
        _devices,
        "an integer >= 1, -1 (every device), a list of device indices (e.g. [0, 1]) or auto",
    ),
    (
        "trainer.gradient_clip_val",
        lambda v: v is None or (_number(v) and v >= 0),
        "null or a number >= 0",
    ),
    ("channels_last", lambda v: isinstance(v, bool), "true or false"),
    ("cuda_graphs", lambda v: isinstance(v, bool), "true or false"),
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


# The arguments of digitlab's own networks (digitlab.models): a network of the user's
# (trusted_targets) may mean other things by the same names.
NETWORK_RULES: list[tuple[str, Any, str]] = [
    ("model.channels", _widths, "a list of integers >= 1 (filters per conv block), e.g. [20, 50]"),
    ("model.hidden", _widths, "a list of integers >= 1 (units per hidden layer), e.g. [500]"),
    ("model.kernel_size", lambda v: _whole(v) and v >= 1, "an integer >= 1, e.g. 5"),
]


def check_config(cfg: DictConfig) -> None:
    """Raise DigitlabError for the first value that cannot work."""
    check_targets(cfg, trusted_targets(cfg))
    if found := _first_non_finite(cfg):
        raise DigitlabError(f"{found[0]}={found[1]!r} is invalid: it must be a finite number")
    ours = str(OmegaConf.select(cfg, "model._target_", default="")).startswith("digitlab.models.")
    for key, test, wanted in RULES + (NETWORK_RULES if ours else []):
        value = OmegaConf.select(cfg, key, default="__absent__")
        if isinstance(value, str) and value == "__absent__":
            continue
        if not test(value):
            raise DigitlabError(f"{key}={value!r} is invalid: it must be {wanted}")
    classes = OmegaConf.select(cfg, "data.classes", default=None)
    if classes is not None:
        class_names(OmegaConf.to_object(classes) if isinstance(classes, ListConfig) else classes)
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
