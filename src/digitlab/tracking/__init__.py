"""MLflow: the store, one run's life, and sweeps as parent and child runs (no torch here)."""
