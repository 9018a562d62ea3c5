"""The config a ``resume=`` runs: the run's own, as it was trained, whatever the defaults are now.

``digitlab resume=<id>`` alone must continue the run that was interrupted, not train the default
model on top of its weights. So the stored config (the run's ``config.yaml``, or the
checkpoint's saved one) is the base, and the command's overrides are sorted in three:

- where and how this process runs (the store, the data folder, the device, the pictures): taken
  from this command, overridden or not;
- how long (``trainer.max_epochs``): the run's own unless overridden; a longer run is refused
  when a learning-rate schedule spans the run's length (it cannot be stretched afterwards);
- everything else decides what is trained (model, data, optimizer, seed, ...): an override that
  differs from the stored value is refused in one line.

The stored config comes from a store or a file, so it is data: it is parsed into the run schema
(:func:`digitlab.config.spec.read_run`: the recipe's keys only, plain values, no ``${...}``,
bounded sizes) before anything else reads it; its data root, mirrors, downloads and
``trusted_targets`` are never read (this command's are), and what its ``_target_``s name is
checked when built, against this command's trust, as always.

Reading the stored config (a checkpoint's, a store's ``config.yaml``) is
:mod:`digitlab.jobs.resume`'s: this floor only merges and parses what it is given.
No torch here: the command line calls this before importing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from digitlab.config.spec import RunSpec, read_run
from digitlab.errors import DigitlabError

# Taken from this command: where and how this process trains, not what.
LOCAL = (
    "logger",
    "data.root",
    "data.eval_batch_size",
    "trusted_targets",
    "resume",
    "figures",
    "callbacks",
    "test_after_fit",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    # Where files come from: a stored config never chooses mirrors or archives (nor downloads
    # by itself).
    "data.source.download",
    "data.source.mirrors",
    "data.source.archive",
    "data.source.archive_md5",
)
# The run's own unless overridden.
EXTENDABLE = ("trainer.max_epochs",)
# Config groups, whose option replaces a whole node (``model=mlp``); ``experiment`` sets keys
# anywhere.
GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "figures")


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def overridden_keys(overrides: Sequence[str]) -> list[str]:
    """The key or group each override sets: ``model=mlp`` -> model, ``+optimizer.x=1`` ->
    optimizer.x, ``~callbacks.figures`` -> callbacks.figures; Hydra's own (``hydra.*``) left
    out."""
    keys = []
    for override in overrides:
        key = str(override).split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if key and not key.startswith("hydra"):
            keys.append(key)
    return keys


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        found: dict[str, Any] = {}
        for key, value in node.items():
            found.update(_leaves(value, f"{prefix}{key}."))
        return found or ({prefix.rstrip("."): {}} if prefix else {})
    return {prefix.rstrip("."): node}


def resumed_config(
    cfg: DictConfig, stored: Mapping[str, Any], overrides: Sequence[str], target: str
) -> DictConfig:
    """``cfg`` (this command's composition) made the config of the resumed run ``target``: the
    stored config, with LOCAL keys from ``cfg`` and the overrides checked (module docstring).
    Raises DigitlabError, in one line, for an override that changes what was trained."""
    composed = OmegaConf.to_container(cfg, resolve=True)
    stored = {k: v for k, v in dict(stored).items() if k != "trusted_targets"}
    now, then = _leaves(composed), _leaves(stored)
    changed: dict[str, Any] = {}
    for key in overridden_keys(overrides):
        scope = [k for k in now if _under(k, [key])] if key != "experiment" else list(now)
        for leaf in scope:
            if _under(leaf, LOCAL) or now[leaf] == then.get(leaf, now[leaf]):
                continue
            if _under(leaf, EXTENDABLE):
                changed[leaf] = now[leaf]
                continue
            raise DigitlabError(
                f"resume={target} continues the run as it was trained, and {key} changes that "
                f"({leaf} is {then.get(leaf)!r} there, {now[leaf]!r} here): drop the override, "
                "or train a new run without resume="
            )
    _check_schedule(stored, changed, target)
    merged = OmegaConf.create(stored)
    with open_dict(merged):
        for leaf in _added_since(now, then, stored):  # keys a newer digitlab has: defaults
            OmegaConf.update(merged, leaf, now[leaf], merge=False)
        for key in LOCAL:
            if OmegaConf.select(cfg, key, default="__absent__") != "__absent__":
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
            elif key.startswith("data.source."):  # this command's source has none: neither
                source = OmegaConf.select(merged, "data.source", default=None)
                if isinstance(source, DictConfig):
                    source.pop(key.rsplit(".", 1)[1], None)
        for key, value in changed.items():
            OmegaConf.update(merged, key, value, merge=False)
    return merged


def _added_since(
    now: Mapping[str, Any], then: Mapping[str, Any], stored: Mapping[str, Any]
) -> list[str]:
    """Leaves of this composition that the stored config lacks, outside the nodes it builds an
    object from (a stored ``model`` is complete as it is: another network's keys would not
    fit it)."""
    tree = OmegaConf.create(dict(stored))

    def in_built_node(leaf: str) -> bool:
        parts = leaf.split(".")
        for i in range(1, len(parts)):
            node = OmegaConf.select(tree, ".".join(parts[:i]))
            if isinstance(node, DictConfig) and "_target_" in node:
                return True
        return False

    return [leaf for leaf in now if leaf not in then and not in_built_node(leaf)]


def _check_schedule(stored: Mapping[str, Any], changed: Mapping[str, Any], target: str) -> None:
    """A longer (or shorter) run under a learning-rate schedule that spans the run: refused."""
    epochs = changed.get("trainer.max_epochs")
    scheduler = stored.get("scheduler")
    if epochs is None or not scheduler:
        return
    name = str(scheduler.get("_target_", "?")).rsplit(".", 1)[-1]
    before = (stored.get("trainer") or {}).get("max_epochs")
    raise DigitlabError(
        f"resume={target}: trainer.max_epochs={epochs} cannot extend a run whose learning-rate "
        f"schedule ({name}) spans its {before} epochs: resume without trainer.max_epochs, or "
        "train a new run for longer"
    )


# A run's config.yaml is a few kB; a larger one in a store is not digitlab's.
MAX_CONFIG_BYTES = 1024 * 1024


def recipe_from_yaml(text: str, origin: str) -> RunSpec:
    """A stored ``config.yaml``'s text parsed into the run schema (safe YAML: plain data only,
    then :func:`read_run`); one DigitlabError line naming ``origin`` for anything else."""
    if len(text) > MAX_CONFIG_BYTES:
        raise DigitlabError(
            f"{origin} is larger than {MAX_CONFIG_BYTES // 1024} kB, which digitlab never "
            "writes: refused, nothing was run"
        )
    try:
        recipe = yaml.safe_load(text)
    except Exception:  # yaml.YAMLError, or a RecursionError for absurd nesting
        raise DigitlabError(
            f"{origin} is not readable YAML: refused, nothing was run; resume from a .ckpt file "
            "instead"
        ) from None
    return read_run(recipe, origin)
