"""``digitlab.register(run_id, name)``: what ``digitlab-register`` does, from Python."""

from __future__ import annotations

from digitlab.jobs.register import Registration
from digitlab.jobs.register import register as job

__all__ = ["Registration", "register"]


def register(run_id: str, name: str, tracking_uri: str | None = None) -> Registration:
    """Register run ``run_id``'s model (a sweep's parent: its best child's) as a version of
    ``name``, and point ``name@best`` at the version with the highest ``test/acc``: the job
    behind ``digitlab-register`` (:func:`digitlab.jobs.register.register`). Returns the
    :class:`Registration` (``version``, ``new``, ``best``; ``line()`` is what the command
    prints); a missing run or model raises :class:`digitlab.errors.DigitlabError` in one line."""
    return job(run_id, name, tracking_uri=tracking_uri)
