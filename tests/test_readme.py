"""README.md's instructions work from any clone: no path that exists only beside this checkout,
and every extra the suite needs (Chromium for the browser tests) said in the text."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def code_lines(text: str) -> list[str]:
    """The lines inside the README's fenced code blocks."""
    inside, found = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            found.append(line)
    return found


def test_no_command_in_readme_names_a_folder_outside_the_clone():
    outside = [line for line in code_lines(README) if re.search(r"(^|[\s=])\.\./", line)]
    assert outside == []


def test_readme_says_where_the_data_folder_is_by_what_it_holds():
    assert re.search(r"`DIGITLAB_DATA`[^.]*the folder that holds `MNIST/raw/`", README)


def test_readme_says_how_to_install_chromium_for_the_browser_tests():
    assert "apt-get install chromium" in README
    assert "/usr/bin/chromium" in README


def layout_files() -> dict[str, set[str]]:
    """README's Layout block: the modules it names under each package, as paths inside the
    package without ``.py`` (``plots/{a,b}.py`` names ``plots/a`` and ``plots/b``)."""
    block = README.split("## Layout", 1)[1].split("```")[1]
    named: dict[str, set[str]] = {}
    package = None
    for line in block.splitlines():
        if m := re.match(r"  (\w+)/ ", line):
            package = m.group(1)
        elif not line.startswith(" " * 22):  # a top-level entry: conf/, tests/, errors.py...
            package = None
        if package:
            files = named.setdefault(package, set())
            for sub, stems in re.findall(r"(\w+)/\{([\w,]+)\}\.py", line):
                files.update(f"{sub}/{stem}" for stem in stems.split(","))
            files.update(re.findall(r"(?<![/{,\w])(\w+)\.py", line))
    return named


def test_readme_layout_names_every_module_and_none_that_is_gone():
    src = Path(__file__).resolve().parents[1] / "src" / "digitlab"
    named = layout_files()
    assert named.pop("digitlab_optuna") == {"sweeper"}
    assert set(named) == {p.name for p in src.iterdir() if (p / "__init__.py").exists()}
    for package, files in named.items():
        present = {
            str(p.relative_to(src / package).with_suffix(""))
            for p in (src / package).rglob("*.py")
            if p.name != "__init__.py"
        }
        assert files == present, (
            f"{package}/: README lacks {present - files}, names {files - present}"
        )
