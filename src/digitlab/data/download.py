"""Checksum-verified download of IDX files into torchvision's ``<root>/<NAME>/raw/`` layout."""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Sequence
from pathlib import Path

from digitlab.errors import DigitlabError

# torchvision's table of (file name, md5) and its mirror list: one source of truth for MNIST.
MNIST_FILES: tuple[tuple[str, str], ...] = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)


def default_mirrors() -> list[str]:
    from torchvision.datasets import MNIST

    return list(MNIST.mirrors)


def locate(raw_dir: Path, name: str) -> Path | None:
    """The file ``name`` (``x.gz``) or its uncompressed twin ``x``, whichever exists."""
    for candidate in (raw_dir / name, raw_dir / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def missing_files(raw_dir: Path, files: Sequence[tuple[str, str]] = MNIST_FILES) -> list[str]:
    return [name for name, _ in files if locate(raw_dir, name) is None]


def download_mnist(
    raw_dir: Path,
    mirrors: Sequence[str] | None = None,
    files: Sequence[tuple[str, str]] = MNIST_FILES,
    timeout_s: float = 30.0,
    label: str = "MNIST",
) -> None:
    """Fetch every missing file from the first mirror that serves it with the right md5.

    Idempotent: files already present are left alone. A file that arrives with a wrong checksum
    is deleted. A mirror that cannot be reached is not tried again for the next files: offline,
    each would wait out its timeout once per file. Raises DigitlabError naming the folder, the
    files still missing and what each mirror tried answered.
    """
    raw_dir = Path(raw_dir)
    mirrors = list(mirrors) if mirrors is not None else default_mirrors()
    wanted = [(name, md5) for name, md5 in files if locate(raw_dir, name) is None]
    if not wanted:
        return
    # The folders this download makes, deepest first: a download that fails takes them away
    # again, so that an offline run leaves the data root as it found it.
    created = [folder for folder in (raw_dir, *raw_dir.parents) if not folder.exists()]
    raw_dir.mkdir(parents=True, exist_ok=True)
    answers: dict[str, str] = {}  # mirror -> its last problem; unreachable ones stay out of use
    unreachable: set[str] = set()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # urllib inside torchvision has no timeout of its own
    try:
        for name, md5 in wanted:
            for mirror in [m for m in mirrors if m not in unreachable]:
                problem, reachable = _fetch(raw_dir, mirror, name, md5)
                if problem is None:
                    break
                answers[mirror] = f"{mirror}{name}: {problem}"
                if not reachable:
                    unreachable.add(mirror)
    finally:
        socket.setdefaulttimeout(previous_timeout)
    still_missing = missing_files(raw_dir, files)
    if still_missing:
        remove_empty(created)
        detail = "; ".join(answers.values()) or "no mirror"
        raise DigitlabError(
            f"{label} files missing in {raw_dir}: {', '.join(still_missing)} and the download "
            f"failed ({detail}); copy them there or point DIGITLAB_DATA (or data.root) at a "
            f"folder holding {label}/{raw_dir.name}/"
        )


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: the first that holds anything
    (a file that arrived) stays, and so do the folders above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _fetch(raw_dir: Path, mirror: str, name: str, md5: str) -> tuple[str | None, bool]:
    """(None, True) once ``name`` is in ``raw_dir`` with its md5, else (what went wrong, whether
    the mirror answered at all); a partial or wrong file is deleted."""
    from torchvision.datasets.utils import download_url

    try:
        download_url(mirror.rstrip("/") + "/" + name, root=raw_dir, filename=name, md5=md5)
        return None, True
    except RuntimeError as e:  # torchvision: "File not found or corrupted."
        (raw_dir / name).unlink(missing_ok=True)
        return f"checksum mismatch, partial file deleted ({e})", True
    except urllib.error.HTTPError as e:  # the mirror answered, without this file
        (raw_dir / name).unlink(missing_ok=True)
        return str(e.reason), True
    except (OSError, ValueError) as e:  # refused, offline, a timeout, no such host, a bad URL
        (raw_dir / name).unlink(missing_ok=True)
        return str(getattr(e, "reason", e)), False
