"""Training: the LightningModule, its fused-steps variant, checkpoints, and the ``train`` recipe."""
