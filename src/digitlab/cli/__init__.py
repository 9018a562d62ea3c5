"""Command-line entry points: ``digitlab`` (train), ``digitlab-predict``, ``digitlab-ui``; ``--help``."""
