"""Config values checked before anything heavy is imported, each failure one line with its fix."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from digitlab.config.targets import check_targets, trusted_targets
from digitlab.errors import DigitlabError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# (key, test, what the value must be); keys missing from a config are skipped.
RULES: list[tuple[str, Any, str]] = [
    ("seed", _whole, "an integer"),
    ("data.batch_size", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.steps_per_call", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("data.scale", lambda v: _number(v) and v > 0, "a number > 0"),
    ("data.mean", _number, "a number"),
    ("data.std", lambda v: _number(v) and v > 0, "a number > 0"),
    ("model.input_size", lambda v: _whole(v) and 8 <= v <= 256,
     "an image side in pixels, e.g. 28 or 32"),
    ("data.val_size", lambda v: (_whole(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1),
     "a fraction in (0, 1) or a count >= 1"),
    ("data.test_size", lambda v: v is None or (_whole(v) and v >= 1)
     or (isinstance(v, float) and 0 < v < 1), "null, a fraction in (0, 1) or a count >= 1"),
    ("data.folds", lambda v: v is None or (_whole(v) and v >= 2),
     "null (one validation holdout) or an integer >= 2 (K-fold cross-validation)"),
    ("optimizer.lr", lambda v: _number(v) and v > 0, "a number > 0, e.g. 0.1"),
    ("optimizer.momentum", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("trainer.max_epochs", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("trainer.gradient_clip_val", lambda v: v is None or (_number(v) and v >= 0),
     "null or a number >= 0"),
    ("trainer.accelerator", lambda v: v in ACCELERATORS, "one of " + ", ".join(ACCELERATORS)),
    ("figures.filters_every_n_epochs", lambda v: _whole(v) and v >= 0,
     "an integer >= 0 (0: filters at the start and end only)"),
    ("figures.samples", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("figures.mistakes", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("figures.probabilities", lambda v: _whole(v) and v >= 1, "an integer >= 1"),
    ("resume", lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
     "null, an MLflow run id or a .ckpt path"),
]


def check_config(cfg: DictConfig) -> None:
    """Raise DigitlabError for the first value that cannot work."""
    check_targets(cfg, trusted_targets(cfg))
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
