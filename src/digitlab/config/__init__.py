"""Where the configs live, the OmegaConf resolvers they use, and the one way a word that
names nothing is answered: the closest valid ones (no torch import here)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/digitlab


def _find_conf_dir() -> Path:
    # A source checkout keeps conf/ at the project root; an installed wheel ships it in the package.
    for candidate in (_PACKAGE_DIR.parents[1] / "conf", _PACKAGE_DIR / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"digitlab configs not found next to {_PACKAGE_DIR}")


CONF_DIR = _find_conf_dir()


def project_root() -> Path:
    """The folder that holds ``data/``, ``mlruns/`` and ``outputs/``.

    ``DIGITLAB_ROOT`` wins; otherwise the source checkout the package runs from; otherwise the
    current directory (an installed package has no checkout).
    """
    if env := os.environ.get("DIGITLAB_ROOT"):
        return Path(env).resolve()
    if CONF_DIR.parent != _PACKAGE_DIR:
        return CONF_DIR.parent
    return Path.cwd().resolve()


def register_resolvers() -> None:
    """Make ``${project_root:}`` available to the YAML files (idempotent)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))


def config_groups(conf_dir: Path) -> dict[str, list[str]]:
    """``{group: sorted options}`` for every folder of YAML files under ``conf_dir``, Hydra's
    own ``hydra/...`` groups left out (``--hydra-help`` lists those)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf_dir.rglob("*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group != "." and not group.startswith("hydra"):
            groups.setdefault(group, []).append(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def closest(word: str, choices: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)


def either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def suggest(word: str, choices: Sequence[str], listing: str, prefix: str = "") -> str:
    """``did you mean <the closest>? (<listing>: ...)``, or the list alone if nothing is close."""
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    close = [f"{prefix}{c}" for c in closest(word, choices)]
    if close:
        return f"did you mean {either(close)}? ({listing}: {shown})"
    return f"choose one of {shown}" if listing == "options" else f"{listing}: {shown}"
