"""Input checks that answer before torch and Lightning are imported (they take seconds to load)."""

from __future__ import annotations

from omegaconf import DictConfig

from digitlab.config.spec import check_config
from digitlab.config.targets import trusted_targets
from digitlab.data.sources import DigitData, read_data
from digitlab.logs import set_verbosity, verbose_requested
from digitlab.tracking import store as tracking


def preflight(cfg: DictConfig) -> DigitData:
    """Check the config values, the tracking server and the data files; return the decoded data.

    Raises DigitlabError at the first problem, before any MLflow run exists. The data readers
    validate with numpy and import torch only once the files have passed, so every bad-input
    case except a missing GPU and a bad checkpoint answers without importing torch.
    """
    set_verbosity(verbose_requested(cfg))
    check_config(cfg)
    tracking.check_reachable(cfg.logger.tracking_uri)
    return read_data(cfg.data, trusted_targets(cfg))
