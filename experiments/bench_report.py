"""What a benchmark's markdown report states besides its figures: date, machine, commits, tables."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def machine() -> str:
    """``x86_64, 2 CPUs (Intel Xeon Processor), 24 GiB, Linux 6.1``: enough to compare runs."""
    model = "unknown CPU"
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:  # not Linux: the platform line alone
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({model}){memory}, "
        f"{platform.system()} {platform.release()}"
    )


def load_average() -> float:
    return os.getloadavg()[0]


def git_commit(path: Path) -> str:
    """``abc1234`` (``abc1234+dirty`` with uncommitted changes), or why there is none."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def versions(python: str | Path, modules: Sequence[str]) -> str:
    """``torch 2.15.0, lightning 2.6.6``: what ``python`` imports, read in a subprocess."""
    code = (
        "import importlib.metadata as m, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: print(name, 'absent')\n"
        "print('python', sys.version.split()[0])"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return ", ".join(done.stdout.split("\n")).strip(", ") if done.returncode == 0 else "unknown"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right_from: int = 1) -> str:
    """A markdown table; columns from ``right_from`` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Print the report and write it to ``path``."""
    print("\n" + text)
    path.write_text(text)
    print(f"\nwritten to {path}")
