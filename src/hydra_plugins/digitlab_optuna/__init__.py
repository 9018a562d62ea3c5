"""digitlab's Hydra sweeper plugin: a stored Optuna study, with pruning (hydra/sweeper=optuna)."""
