"""Which code a config may name in ``_target_``: the project's own, plus what the user trusts.

Hydra imports and calls whatever ``_target_`` names, so a config, or a checkpoint's saved config,
naming ``os.system`` would run it. Every ``_target_`` is checked against this allow-list before
anything is instantiated. The user widens it for their own code with ``trusted_targets`` in their
config (``trusted_targets=[mypkg]``) or ``digitlab-predict --trust mypkg``; a checkpoint's own
saved ``trusted_targets`` is never read, so a file from elsewhere cannot trust itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from digitlab.errors import DigitlabError

# Modules whose classes and functions any config may name.
PROJECT_TARGETS = ("digitlab", "torch.optim", "lightning.pytorch.callbacks")


def is_allowed(target: str, trusted: Iterable[str] = ()) -> bool:
    """Whether ``target`` lies in one of the project's modules or a ``trusted`` one, matched on
    whole module names (``mypkg`` allows ``mypkg.nets.Tiny``, not ``mypkg_evil.run``)."""
    for module in (*PROJECT_TARGETS, *trusted):
        module = str(module).rstrip(".")
        if target == module or target.startswith(module + "."):
            return True
    return False


def trusted_targets(cfg: Any) -> tuple[str, ...]:
    """The config's ``trusted_targets``: module names the user allows beyond the project's."""
    value = cfg.get("trusted_targets") if hasattr(cfg, "get") else None
    if value is None:
        return ()
    if isinstance(value, ListConfig | list | tuple) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise DigitlabError(
        f"trusted_targets={value!r} is invalid: it must be a list of module names, "
        "e.g. trusted_targets=[mypkg]"
    )


def first_untrusted(config: Any, trusted: Iterable[str] = (), path: str = "") -> str | None:
    """``"<key path>_target_=<target>"`` of the first ``_target_`` outside the allow-list, else None."""
    if isinstance(config, DictConfig | ListConfig):
        config = OmegaConf.to_container(config, resolve=False)
    trusted = tuple(trusted)
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None and not is_allowed(str(target), trusted):
            return f"{path}_target_={target}"
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return None
    for key, value in items:
        if found := first_untrusted(value, trusted, f"{path}{key}."):
            return found
    return None


def check_targets(config: Any, trusted: Iterable[str] = ()) -> None:
    """Raise DigitlabError if a ``_target_`` in ``config`` is outside the allow-list."""
    trusted = tuple(trusted)
    if found := first_untrusted(config, trusted):
        allowed = ", ".join((*PROJECT_TARGETS, *trusted))
        raise DigitlabError(
            f"{found} is not allowed: a config may only name code under {allowed} (pick an "
            "option of the group, or trust your own module with trusted_targets=[mypkg])"
        )
