"""Checksum-verified downloads into torchvision's ``<root>/<NAME>/raw/`` layout, through
torchvision.datasets: its data sets' mirror lists, its download, md5 and unzip functions."""

from __future__ import annotations

import shutil
import socket
import tempfile
import urllib.error
from collections.abc import Sequence
from pathlib import Path

from digitlab.errors import DigitlabError


def default_mirrors(name: str) -> list[str]:
    """The mirrors ``torchvision.datasets.<name>`` fetches its files from (MNIST, FashionMNIST,
    KMNIST); none for a set it does not fetch file by file (EMNIST comes as one archive)."""
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, name, None)
    return list(vars(dataset).get("mirrors", ())) if isinstance(dataset, type) else []


def locate(raw_dir: Path, name: str) -> Path | None:
    """The file ``name`` (``x.gz``) or its uncompressed twin ``x``, whichever exists."""
    for candidate in (raw_dir / name, raw_dir / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def missing_files(raw_dir: Path, files: Sequence[tuple[str, str]]) -> list[str]:
    return [name for name, _ in files if locate(raw_dir, name) is None]


def download_files(
    raw_dir: Path,
    files: Sequence[tuple[str, str]],
    mirrors: Sequence[str] = (),
    archive: tuple[str, str] | None = None,
    label: str = "MNIST",
    timeout_s: float = 30.0,
) -> None:
    """Fetch every missing file of ``files`` ((name, md5)) from the first mirror that serves it
    with its md5, or, given ``archive`` ((URL, md5)), unpack them from that archive.

    Files already present are left alone; a file or archive that arrives with a wrong md5 is
    deleted, and so is an archive's unpacked rest. A mirror that cannot be reached is not tried
    again for the next files: offline, each would wait out its timeout once per file. Raises
    DigitlabError naming the folder, the files still missing and what each try answered; the
    folders a failed download made are taken away again, so that an offline run leaves the data
    root as it found it.
    """
    raw_dir = Path(raw_dir)
    created = [folder for folder in (raw_dir, *raw_dir.parents) if not folder.exists()]
    raw_dir.mkdir(parents=True, exist_ok=True)
    answers: dict[str, str] = {}  # source -> its last problem
    unreachable: set[str] = set()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # urllib inside torchvision has no timeout of its own
    try:
        if archive is not None:
            _unpack(raw_dir, archive, [name for name, _ in files], answers)
        for name, md5 in [(n, m) for n, m in files if locate(raw_dir, n) is None and m]:
            for mirror in [m for m in mirrors if m not in unreachable]:
                url = mirror.rstrip("/") + "/" + name
                problem, reachable = _fetch(url, raw_dir, name, md5)
                if problem is None:
                    break
                answers[mirror] = f"{url}: {problem}"
                if not reachable:
                    unreachable.add(mirror)
    finally:
        socket.setdefaulttimeout(previous_timeout)
    still_missing = missing_files(raw_dir, files)
    if still_missing:
        for folder in created:  # deepest first; the first that holds a file stays
            if any(folder.iterdir()):
                break
            folder.rmdir()
        detail = "; ".join(answers.values()) or "no mirror"
        raise DigitlabError(
            f"{label} files missing in {raw_dir}: {', '.join(still_missing)} and the download "
            f"failed ({detail}); copy them there or point DIGITLAB_DATA (or data.root) at a "
            f"folder holding {label}/{raw_dir.name}/"
        )


def _fetch(url: str, folder: Path, name: str, md5: str) -> tuple[str | None, bool]:
    """(None, True) once ``url`` is ``folder/name`` with its md5, else (what went wrong, whether
    the server answered at all); a partial or wrong file is deleted."""
    from torchvision.datasets.utils import download_url

    try:
        download_url(url, root=folder, filename=name, md5=md5)
        return None, True
    except RuntimeError as e:  # torchvision: "File not found or corrupted."
        problem, reachable = f"checksum mismatch, partial file deleted ({e})", True
    except urllib.error.HTTPError as e:  # the server answered, without this file
        problem, reachable = str(e.reason), True
    except (OSError, ValueError) as e:  # refused, offline, a timeout, no such host, a bad URL
        problem, reachable = str(getattr(e, "reason", e)), False
    (folder / name).unlink(missing_ok=True)
    return problem, reachable


def _unpack(raw_dir: Path, archive: tuple[str, str], names: list[str], answers: dict) -> None:
    """The missing ``names`` moved into ``raw_dir`` from the archive at ``archive[0]`` (its md5
    ``archive[1]``), which torchvision fetches into ``raw_dir`` and unpacks beside them."""
    from torchvision.datasets.utils import check_integrity, extract_archive

    url, md5 = archive
    kept = raw_dir / Path(url).name  # a later set from the same archive is unpacked from it
    if not check_integrity(kept, md5):
        problem, _ = _fetch(url, raw_dir, kept.name, md5)
        if problem is not None:
            answers[url] = f"{url}: {problem}"
            return
    with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".unpacking-") as unpacked:
        extract_archive(kept, unpacked)
        for name in [n for n in names if locate(raw_dir, n) is None]:
            found = next(Path(unpacked).rglob(name), None)
            if found is None:
                answers[url] = f"{url}: the archive holds no {name}"
            else:
                shutil.move(found, raw_dir / name)
