"""Clear the outputs of the docs' notebooks before committing them, so diffs show code only.

uv run python .ci/strip_notebooks.py            # every docs/*.ipynb
uv run python .ci/strip_notebooks.py PATH ...   # these notebooks
"""

import sys
from pathlib import Path

import nbformat


def strip(path: Path) -> bool:
    """Clear outputs and execution counts in place; True if anything changed."""
    notebook = nbformat.read(path, as_version=4)
    changed = False
    for cell in notebook.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(notebook, path)
    return changed


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path("docs").glob("*.ipynb"))
    for path in paths:
        print(f"{path}: {'stripped' if strip(path) else 'already clean'}")
