"""Imports point one way (docs/architecture.md): the two front doors, ``cli`` and ``api``, call
the layers below and never each other, and nothing below imports either door. Read from the
source with ``ast``, imports inside functions included (most of digitlab's are)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
DOORS = ("cli", "api")


def imported(path: Path) -> set[str]:
    """The ``digitlab`` modules (or packages) that the file at ``path`` imports anywhere."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "digitlab"}


def layer(path: Path) -> str:
    """``cli``, ``api``, ``jobs``... for a module of ``src/digitlab``; the package's own
    ``__init__.py`` and ``__main__.py`` are ``top``; ``hydra_plugins``' modules are theirs."""
    parts = path.relative_to(SRC).parts
    if parts[0] != "digitlab":
        return parts[0]
    return parts[1] if len(parts) > 2 else "top"


def doors_imported(path: Path) -> set[str]:
    """Which front doors the file at ``path`` imports."""
    return {
        door
        for name in imported(path)
        for door in DOORS
        if name == f"digitlab.{door}" or name.startswith(f"digitlab.{door}.")
    }


def test_no_module_imports_a_door_above_it_and_api_never_imports_cli():
    wrong = {}
    for path in sorted(SRC.rglob("*.py")):
        own = layer(path)
        if own == "top":  # digitlab's __init__ names the API lazily; __main__ is the command
            continue
        allowed = {own} if own in DOORS else set()
        if doors := doors_imported(path) - allowed:
            wrong[str(path.relative_to(SRC))] = sorted(doors)
    assert not wrong, f"imports of a front door from below or beside it: {wrong}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from digitlab.cli.ui import main\n    import digitlab.api\n")
    assert doors_imported(sample) == {"cli", "api"}
