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
