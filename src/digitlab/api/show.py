"""``digitlab.show(run_id, pattern)``: a run's pictures and tables, inline in Jupyter."""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from digitlab.api.model import check_run
from digitlab.errors import DigitlabError
from digitlab.jobs import quiet_downloads
from digitlab.tracking import store


def show(run_id: str, *patterns: str, tracking_uri: str | None = None) -> list[Path]:
    """Display the run's artifacts whose path matches a pattern, and return their local paths.

    Patterns are shell-style and match the path inside the run's artifacts (``*`` crosses
    folders), by default ``figures/*``: every picture. E.g. ``"figures/filters/conv1_*"`` shows
    conv1's filters before and after training and their statistics. In a Jupyter kernel, PNGs
    are displayed as images and JSON tables (``*_stats_*.json``) as DataFrames; elsewhere the
    files are only downloaded. A sweep's parent run holds ``summary/*``.
    """
    patterns = patterns or ("figures/*",)
    client = store.open_client(tracking_uri or store.default_tracking_uri())
    check_run(client, str(run_id))
    everything = artifact_paths(client, str(run_id))
    chosen = [p for p in everything if any(fnmatch.fnmatch(p, pat) for pat in patterns)]
    if not chosen:
        more = f" and {len(everything) - 8} more" if len(everything) > 8 else ""
        listed = ", ".join(everything[:8]) + more
        raise DigitlabError(
            f"run {run_id} has no artifact matching {', '.join(patterns)}: "
            f"it has {listed or 'none'}"
        )
    folder = Path(tempfile.mkdtemp(prefix=f"digitlab-{str(run_id)[:8]}-"))
    with quiet_downloads():
        local = [Path(client.download_artifacts(str(run_id), p, str(folder))) for p in chosen]
    for path, name in zip(local, chosen, strict=True):
        display(path, name)
    return local


def artifact_paths(client, run_id: str, folder: str | None = None) -> list[str]:
    """Every file among the run's artifacts, as a path inside them, depth first."""
    paths: list[str] = []
    for item in client.list_artifacts(run_id, folder):
        paths.extend(artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return paths


def display(path: Path, name: str) -> Any:
    """Show one artifact in the running Jupyter kernel: a title, then the picture or table."""
    try:  # optional: IPython is no dependency of digitlab's, but every Jupyter kernel has it
        from IPython import get_ipython
        from IPython.display import Image, Markdown
        from IPython.display import display as ipython_display
    except ImportError:  # not in Jupyter: the caller has the paths
        return None
    if get_ipython() is None:
        return None
    ipython_display(Markdown(f"**{name}**"))
    if path.suffix == ".png":
        return ipython_display(Image(filename=str(path)))
    if path.suffix == ".json":
        try:  # mlflow's log_table writes pandas' "split" layout
            return ipython_display(pd.read_json(path, orient="split"))
        except ValueError:
            pass
    return ipython_display(Markdown(f"`{path}`"))
