"""What a tracking URI names: a SQLite file, or a tracking server (pure string work, no MLflow)."""

from __future__ import annotations

from pathlib import Path


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def is_server(tracking_uri: str) -> bool:
    """True for a tracking server (``http(s)://``), which stores artifacts where it decides."""
    return tracking_uri.startswith(("http://", "https://"))
