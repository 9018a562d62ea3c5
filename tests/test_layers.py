"""Imports point one way (docs/architecture.md): each package sits on a floor and imports only its
own package and the floors below; no two packages import each other; no module imports another
that imports it back, however far round. Read from the source with ``ast``, imports inside
functions included, so a lazy import counts as much as one at the top."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Top to bottom. ``top`` is ``digitlab/__init__.py`` (the API's names) and ``__main__.py``;
# ``errors``, ``clock`` and ``logs`` are digitlab's single modules. Packages of one floor may
# import one another (never both ways), except the doors: those never import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("top",),
    ("cli", "api", "hydra_plugins"),
    ("jobs",),
    ("serving",),
    ("training",),
    ("callbacks", "figures", "tracking", "data", "models", "search"),
    ("config",),
    ("errors", "clock", "logs"),
)
DOORS = FLOORS[1]
FLOOR = {unit: height for height, units in enumerate(FLOORS) for unit in units}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path) -> dict[str, Path]:
    """Every module under ``src/digitlab`` and ``src/hydra_plugins``, by dotted name."""
    return {
        module_name(path, src): path
        for root in ("digitlab", "hydra_plugins")
        for path in sorted((src / root).rglob("*.py"))
    }


def unit(module: str) -> str:
    """The floor's unit a module belongs to: ``digitlab.data.sources`` -> ``data``,
    ``digitlab.errors`` -> ``errors``, ``digitlab`` and ``digitlab.__main__`` -> ``top``,
    ``hydra_plugins.x.y`` -> ``hydra_plugins``."""
    parts = module.split(".")
    if parts[0] != "digitlab":
        return parts[0]
    if len(parts) == 1 or parts[1] == "__main__":
        return "top"
    return parts[1]


def imported(path: Path, module: str, known: Mapping[str, Path]) -> set[str]:
    """The modules of ``known`` that the file at ``path`` (module ``module``) imports anywhere:
    each name taken to its longest prefix that is a module (``from digitlab.config.targets
    import build`` imports ``digitlab.config.targets``; ``from digitlab import fit``, the
    package ``digitlab``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            # ``import digitlab`` alone adds nothing: Python imports a package before any of its
            # modules. What the package lends from above (``from digitlab import fit``) counts.
            names.update(alias.name for alias in node.names if alias.name != "digitlab")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, ``level - 1`` steps up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if (prefix := ".".join(parts[:end])) in known:
                found.add(prefix)
                break
    return found - {module}


def graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module under ``src``."""
    known = modules(src)
    return {module: imported(path, module, known) for module, path in known.items()}


def upward(edges: Mapping[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a higher floor, or of another door."""
    wrong = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            ua, ub = unit(a), unit(b)
            if ua == ub or ua == "top":
                continue
            if FLOOR[ub] < FLOOR[ua] or (ua in DOORS and ub in DOORS):
                wrong.append(f"{a} -> {b}")
    return wrong


def both_ways(edges: Mapping[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs of units that import each other."""
    pairs = {(unit(a), unit(b)) for a, targets in edges.items() for b in targets}
    return sorted((a, b) for a, b in pairs if a < b and (b, a) in pairs)


def circles(edges: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import one another round a circle (Tarjan's strongly connected
    components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(frozenset(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_only_its_own_package_and_the_floors_below():
    edges = graph()
    assert set(map(unit, edges)) <= set(FLOOR), "a package with no floor: add it to FLOORS"
    assert not (wrong := upward(edges)), "imports of a higher floor or another door:\n" + "\n".join(
        wrong
    )


def test_no_two_packages_import_each_other():
    assert both_ways(graph()) == []


def test_no_module_imports_itself_round_a_circle():
    found = [sorted(group) for group in circles(graph())]
    assert not found, f"modules importing one another round a circle: {found}"


def plant(src: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_the_checks_see_an_upward_import_inside_a_function_and_a_circle(tmp_path):
    src = plant(
        tmp_path,
        {
            "digitlab/__init__.py": "",
            "digitlab/errors.py": "",
            "digitlab/config/__init__.py": "",
            "digitlab/config/spec.py": "from digitlab.errors import DigitlabError\n",
            "digitlab/data/__init__.py": "",
            "digitlab/data/a.py": "from digitlab.config.spec import check\n",
            "digitlab/data/b.py": "def f():\n    from . import a\n",
            "digitlab/jobs/__init__.py": "",
            "digitlab/jobs/train.py": "import digitlab.data.b\n",
            "digitlab/cli/__init__.py": "",
            "digitlab/cli/train.py": "from digitlab.jobs import train\n",
            "digitlab/api/__init__.py": "",
            "hydra_plugins/x/__init__.py": "",
        },
    )
    edges = graph(src)
    assert upward(edges) == [] and circles(edges) == [] and both_ways(edges) == []

    plant(src, {"digitlab/config/spec.py": "def f():\n    from digitlab.data.a import g\n"})
    plant(src, {"digitlab/api/fit.py": "def f():\n    import digitlab.cli.train\n"})
    plant(
        src, {"digitlab/errors.py": "import digitlab\n\ndef f():\n    from digitlab import fit\n"}
    )
    plant(src, {"digitlab/data/a.py": "import digitlab.data.b\nfrom digitlab.config import spec\n"})
    edges = graph(src)
    assert upward(edges) == [
        "digitlab.api.fit -> digitlab.cli.train",
        "digitlab.config.spec -> digitlab.data.a",
        "digitlab.errors -> digitlab",
    ]
    assert both_ways(edges) == [("config", "data")]
    assert circles(edges) == [
        frozenset({"digitlab.config.spec", "digitlab.data.a", "digitlab.data.b"})
    ]
