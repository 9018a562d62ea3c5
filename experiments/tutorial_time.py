"""Wall time of docs/tutorial.ipynb, top to bottom in a fresh Jupyter kernel, as a reader runs it.

    uv run python experiments/tutorial_time.py                           # tiny synthetic set
    DIGITLAB_DATA=../shared/data uv run python experiments/tutorial_time.py   # the real data

The runs go to a new project root in a temporary folder (its own MLflow store, created and
migrated as on a first run), so the project's own mlruns/ is left alone. ``--out PATH`` keeps the
executed notebook, outputs and all, for a look.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the executed notebook here")
    args = parser.parse_args()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="digitlab-tutorial-") as folder:
        os.environ["DIGITLAB_ROOT"] = folder  # the kernel inherits it
        started = time.perf_counter()
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}
        ).execute()
        seconds = time.perf_counter() - started
    if args.out:
        nbformat.write(notebook, args.out)
    data = os.environ.get("DIGITLAB_DATA") or "the synthetic set"
    print(f"docs/tutorial.ipynb on {data}: {seconds:.1f} s, kernel start included")


if __name__ == "__main__":
    main()
