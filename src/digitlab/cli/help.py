"""``digitlab --help``: the config groups and the composed config, in well under a second.

Hydra's own ``--help`` lists the groups by rebuilding (deep-copying) its whole config repository
once per group, the plugins' groups included: about 2 s on a 2-core machine before a line
prints. This app's groups are the folders of ``conf/`` and its options the YAML files in them,
so they are read straight from disk; the config is composed once with Hydra's compose API,
command-line overrides applied, as ``--cfg job`` would print it. ``--hydra-help`` and every
other Hydra flag still go to Hydra.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from digitlab.config import config_groups

HELP_FLAGS = ("--help", "-h")
MULTIRUN_FLAGS = ("-m", "--multirun")


def wants_help(argv: list[str]) -> bool:
    """True for ``--help``/``-h`` with overrides only (any other flag is left to Hydra)."""
    flags = [a for a in argv if a.startswith("-")]
    return any(f in HELP_FLAGS for f in flags) and all(
        f in HELP_FLAGS + MULTIRUN_FLAGS for f in flags
    )


def render(argv: list[str], conf_dir: Path, app: str = "digitlab") -> str:
    overrides = [a for a in argv if not a.startswith("-")]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name=app):
        cfg = compose("config", overrides=overrides)
    groups = "\n".join(f"{g}: {', '.join(o)}" for g, o in config_groups(conf_dir).items())
    return (
        f"{app}: train and compare handwritten-digit models from composed configs.\n"
        f"Usage: {app} [group=option ...] [key=value ...] [-m]   (Hydra's override grammar)\n\n"
        "== Configuration groups ==\n"
        "Compose your configuration from those groups (group=option)\n\n"
        f"{groups}\n\n"
        "== Config ==\n"
        "Override anything in the config (foo.bar=value)\n\n"
        f"{OmegaConf.to_yaml(cfg)}\n"
        "Sweeps: -m with comma lists or range(), e.g. `-m optimizer.lr=0.01,0.1`;\n"
        "hydra/launcher=parallel (this machine's cores) | slurm | local. Hydra's own flags and\n"
        "groups: --hydra-help. Results: the MLflow store under mlruns/ (README.md).\n"
    )
