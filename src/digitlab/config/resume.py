"""The config a ``resume=`` runs: the run's own, as it was trained, whatever the defaults are now.

The stored config (parsed by :func:`digitlab.config.spec.read_run`: plain values, the recipe's
keys only) is the base; of the command's overrides, where and how this process runs
(:data:`LOCAL`) comes from this command, ``trainer.max_epochs`` may extend the run (unless a
learning-rate schedule spans its length), and anything else that changes what was trained is
refused in one line. Reading the stored config is :mod:`digitlab.jobs.resume`'s. No torch here.
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


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


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
    # the key or group each override sets (model=mlp: model; +optimizer.x=1: optimizer.x)
    keys = [str(o).split("=", 1)[0].lstrip("+~").split("@", 1)[0] for o in overrides]
    for key in [k for k in keys if k and not k.startswith("hydra")]:
        scope = [k for k in now if _under(k, [key])] if key != "experiment" else list(now)
        for leaf in scope:
            if _under(leaf, LOCAL) or now[leaf] == then.get(leaf, now[leaf]):
                continue
            if leaf == "trainer.max_epochs":  # the run's own unless overridden
                changed[leaf] = now[leaf]
                continue
            raise DigitlabError(
                f"resume={target} continues the run as it was trained, and {key} changes that "
                f"({leaf} is {then.get(leaf)!r} there, {now[leaf]!r} here): drop the override, "
                "or train a new run without resume="
            )
    epochs, scheduler = changed.get("trainer.max_epochs"), stored.get("scheduler")
    if epochs is not None and scheduler:  # a schedule spanning the run cannot be stretched
        name = str(scheduler.get("_target_", "?")).rsplit(".", 1)[-1]
        raise DigitlabError(
            f"resume={target}: trainer.max_epochs={epochs} cannot extend a run whose "
            f"learning-rate schedule ({name}) spans its {then.get('trainer.max_epochs')} "
            "epochs: resume without trainer.max_epochs, or train a new run for longer"
        )
    # Keys a newer digitlab has take their defaults, except inside a node the stored config
    # builds an object from (a stored model is complete: another network's keys would not fit).
    built = [leaf.removesuffix("._target_") for leaf in then if leaf.endswith("._target_")]
    merged = OmegaConf.create(stored)
    with open_dict(merged):
        for leaf in [k for k in now if k not in then and not _under(k, built)]:
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
