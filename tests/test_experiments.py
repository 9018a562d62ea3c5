"""The scripts in experiments/ are run by hand, months apart: what they import from digitlab
must still exist, or a reader finds out only when a measurement is due."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.py"))


def digitlab_imports(script: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for each ``from digitlab... import name`` in ``script``."""
    return [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(script.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitlab")
        for alias in node.names
    ]


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_what_an_experiment_imports_from_digitlab_exists(script):
    for module, name in digitlab_imports(script):
        found = importlib.import_module(module)
        submodule = hasattr(found, "__path__") and importlib.util.find_spec(f"{module}.{name}")
        assert hasattr(found, name) or submodule, f"{script.name}: {module} has no {name}"
