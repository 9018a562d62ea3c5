"""Registering a run's model under a name, ``@best`` on the highest ``test/acc``: the job behind
``digitlab-register`` and ``digitlab.register``. No torch import."""

from __future__ import annotations

from digitlab.tracking import registry, store
from digitlab.tracking.registry import Registration

__all__ = ["Registration", "register"]


def register(run_id: str, name: str, tracking_uri: str | None = None) -> Registration:
    """Register run ``run_id``'s model (a sweep's parent: its best child's) as a version of
    ``name`` in ``tracking_uri``'s store (default: the project's), unless a version already holds
    it, and point ``name@best`` at the best version (:func:`digitlab.tracking.registry.register`).
    Raises :class:`digitlab.errors.DigitlabError` in one line for a missing run or model."""
    client = store.open_client(tracking_uri or store.default_tracking_uri())
    return registry.register(client, run_id, name)
