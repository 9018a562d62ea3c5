"""digitlab: config-driven handwritten-digit experiments (Hydra + Lightning + MLflow)."""

__version__ = "0.1.0"
