"""digitlab from Python: ``compose``, ``fit``, ``runs``, ``load``, ``show`` (re-exported lazily by
the ``digitlab`` package itself, so ``import digitlab`` stays light)."""
