"""The argument names of a ``_target_``, read from its source file without importing it.

``inspect.signature`` would import torch (about 7 s) before a config is checked; the source says
the same in milliseconds. Where it does not tell (``**kwargs``, an inherited ``__init__``, a name
made at run time), the answer is None and the build itself reports a bad key later.
"""

from __future__ import annotations

import ast
import importlib.util
from importlib.machinery import PathFinder
from pathlib import Path

# Re-exports followed from one module to the next (torch.optim.SGD: two hops).
MAX_HOPS = 5


def argument_names(target: str) -> tuple[str, ...] | None:
    """The names ``target`` (a class or function) accepts as keyword arguments, in order, or
    None."""
    module, _, name = str(target).rpartition(".")
    try:
        node = _definition(module, name)
    except (OSError, SyntaxError, ValueError, ImportError):
        return None
    if isinstance(node, ast.ClassDef):
        node = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
        )
        skip = 1  # self
    else:
        skip = 0
    if not isinstance(node, ast.FunctionDef) or node.args.kwarg is not None:
        return None
    arguments = node.args.args[max(0, skip - len(node.args.posonlyargs)) :]
    return tuple(a.arg for a in (*arguments, *node.args.kwonlyargs))


def _definition(module: str, name: str, hops: int = 0) -> ast.AST | None:
    """The ``class``/``def`` statement of ``name`` in ``module``, through ``from x import name``."""
    path = _source(module)
    if path is None or hops > MAX_HOPS:
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
            return node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    origin = _absolute(node, module, path.name == "__init__.py")
                    return _definition(origin, alias.name, hops + 1)
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` in ``module`` reads from, relative imports resolved."""
    if not node.level:
        return str(node.module)
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}"


def _source(module: str) -> Path | None:
    """The ``.py`` file of ``module``, found as import would find it, without importing it or its
    packages (finding ``torch.optim`` with ``importlib.util.find_spec`` imports ``torch``)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    for depth in range(2, len(parts) + 1):
        if spec is None or spec.submodule_search_locations is None:
            return None
        spec = PathFinder.find_spec(".".join(parts[:depth]), spec.submodule_search_locations)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)
