"""Hyperparameter search: the stored Optuna study and Hydra's sweep syntax as its search space."""
