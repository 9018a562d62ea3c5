"""``digitlab.compose(*overrides)``: the config the command line would run, composed in-process."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from digitlab.config import CONF_DIR
from digitlab.config.command import check_command_line
from digitlab.errors import DigitlabError


@dataclass
class Composed:
    """A composed config with what the command line learns from Hydra beside it."""

    cfg: Any  # DictConfig, without the ``hydra`` node
    choices: dict[str, str]  # chosen option per config group, e.g. {"model": "mlp"}
    output_dir: Path  # ``hydra.run.dir``: where the command line's job would write


def compose(*overrides: str):
    """The composed config (an OmegaConf ``DictConfig``) for command-line overrides.

    ``digitlab.compose("model=mlp", "optimizer.lr=0.05")`` is what ``digitlab model=mlp
    optimizer.lr=0.05 --cfg job`` prints. A bad override raises :class:`DigitlabError` in one
    line (Hydra's message, with the valid options where there is a list); values are checked
    when the config is run (:func:`digitlab.fit`), as on the command line.
    """
    return compose_job(overrides).cfg


def compose_job(overrides: Iterable[str]) -> Composed:
    """Compose with Hydra's compose API; Hydra's global state is cleared again on return, so a
    notebook can compose (and fit) any number of times."""
    overrides = [str(o) for o in overrides]
    if flags := [o for o in overrides if o.startswith("-")]:
        raise DigitlabError(
            f"{flags[0]} is a command-line flag, not an override: pass group=option or "
            "key=value only (for a sweep, call digitlab.fit once per setting)"
        )
    if GlobalHydra.instance().is_initialized():
        raise DigitlabError(
            "another Hydra context is open in this process: leave it (or call "
            "hydra.core.global_hydra.GlobalHydra.instance().clear()) before digitlab.compose"
        )
    # The command line's check of every word (a misspelt preset, option or key: one line with
    # the closest valid ones), so that fit("experiment=fastt") does not train the default.
    cfg = check_command_line(overrides, CONF_DIR, sweep_hint="call digitlab.fit once per value")
    assert cfg is not None  # no flags: the config is always composed
    chosen = cfg.hydra.runtime.choices.items()
    choices = {k: str(v) for k, v in chosen if v is not None and not k.startswith("hydra")}
    output_dir = Path(str(cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    return Composed(cfg, choices, output_dir)
