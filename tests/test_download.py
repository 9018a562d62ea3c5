"""Checksum-verified downloads against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digitlab.data.download import download_mnist
from digitlab.data.idx import write_idx
from digitlab.data.sources import load_mnist
from digitlab.errors import DigitlabError

NAMES = ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def mirror(tmp_path):
    """A folder served at http://127.0.0.1:<port>/ for the test's duration, and its md5 table."""
    served = tmp_path / "served"
    served.mkdir()
    for i, name in enumerate(NAMES):
        write_idx(served / name, np.arange(10 + i, dtype=np.uint8) % 10)
    files = tuple((name, hashlib.md5((served / name).read_bytes()).hexdigest()) for name in NAMES)
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served, files
    server.shutdown()
    server.server_close()
    thread.join()


def test_good_download_is_verified_and_idempotent(mirror, tmp_path):
    url, served, files = mirror
    raw = tmp_path / "raw"
    download_mnist(raw, [url], files)
    for name, _ in files:
        assert (raw / name).read_bytes() == (served / name).read_bytes()
    for name in NAMES:
        (served / name).unlink()  # a second call must not fetch anything
    download_mnist(raw, [url], files)


def test_wrong_checksum_deletes_the_file_and_says_so(mirror, tmp_path):
    url, _, files = mirror
    raw = tmp_path / "raw"
    wrong = ((files[0][0], "0" * 32), files[1])
    with pytest.raises(DigitlabError, match="checksum mismatch, partial file deleted") as e:
        download_mnist(raw, [url], wrong)
    assert files[0][0] in str(e.value) and str(raw) in str(e.value)
    assert not (raw / files[0][0]).exists()
    assert (raw / files[1][0]).exists()  # the good file stays


def test_file_missing_on_the_mirror(mirror, tmp_path):
    url, served, files = mirror
    (served / NAMES[1]).unlink()
    with pytest.raises(DigitlabError, match=f"MNIST files missing in .*{NAMES[1]}.*File not found"):
        download_mnist(tmp_path / "raw", [url], files)
    assert not (tmp_path / "raw" / NAMES[1]).exists()


def test_offline_names_the_folder_and_files(tmp_path):
    raw = tmp_path / "raw"
    files = tuple((name, "0" * 32) for name in NAMES)
    # A port bound and not listening, held while the download tries it: refused, like offline.
    with socket.socket() as closed, pytest.raises(DigitlabError) as e:
        closed.bind(("127.0.0.1", 0))
        download_mnist(raw, [f"http://127.0.0.1:{closed.getsockname()[1]}/"], files)
    message = str(e.value)
    assert str(raw) in message and all(name in message for name in NAMES)
    assert "refused" in message.lower()
    assert not any(Path(raw).glob("*.gz"))


@pytest.fixture
def refused():
    """The URL of a port bound and not listening, held for the test: refused, like offline."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}/"


def test_a_root_that_does_not_exist_is_not_created(tmp_path, refused):
    """data.root=/nowhere created /nowhere/MNIST/raw and waited on the mirrors: now one line."""
    root = tmp_path / "nowhere"
    start = time.perf_counter()
    with pytest.raises(DigitlabError) as e:
        load_mnist(root, download=True, mirrors=[refused])
    message = str(e.value)
    assert f"data folder {root} does not exist" in message, message
    assert "point DIGITLAB_DATA (or data.root) at the folder holding MNIST/raw/" in message
    assert "refused" not in message.lower()  # no mirror was tried
    assert not root.exists() and time.perf_counter() - start < 1


def test_the_default_root_is_created_for_the_first_download(tmp_path, monkeypatch, refused):
    """A fresh checkout has no data/ (git ignores it): the first run downloads into it."""
    from digitlab.config import project_root

    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    root = project_root() / "data"
    with pytest.raises(DigitlabError, match="and the download failed"):
        load_mnist(root, download=True, mirrors=[refused])
    assert not root.exists()  # tried there; the folders it made went with the failure


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist"])
def test_a_failed_download_leaves_no_folder_it_made(tmp_path, refused, name):
    """Offline, data=fashion_mnist left an empty FashionMNIST/raw/ in the (maybe shared) data
    root; a folder that was there before stays, and so does one a file arrived in."""
    from digitlab.data.sources import read_data
    from digitlab.jobs.inputs import data_config

    root = tmp_path / "data"
    root.mkdir()
    node = data_config(name, root)
    node.source.mirrors = [refused]
    folder = root / node.source.folder
    with pytest.raises(DigitlabError, match="and the download failed"):
        read_data(node)
    assert list(root.iterdir()) == []
    folder.parent.mkdir()
    with pytest.raises(DigitlabError, match="and the download failed"):
        read_data(node)
    assert list(root.iterdir()) == [folder.parent] and not folder.exists()


def test_a_download_that_fetched_some_files_keeps_them(mirror, tmp_path):
    url, served, files = mirror
    (served / NAMES[1]).unlink()
    raw = tmp_path / "new" / "raw"
    with pytest.raises(DigitlabError, match="File not found"):
        download_mnist(raw, [url], files)
    assert [p.name for p in raw.iterdir()] == [NAMES[0]]


def test_emnist_missing_says_where_its_files_come_from_and_download_true_says_it_cannot(
    tmp_path, refused
):
    """EMNIST's files have no md5 (NIST ships them in one archive): "set download=true" looped
    back to the same error. Both errors now name the archive and where its files go; no mirror
    is tried and no folder made."""
    from digitlab.data.sources import read_data
    from digitlab.jobs.inputs import data_config

    node = data_config("emnist_balanced", tmp_path)
    raw = tmp_path / "EMNIST" / "raw"
    archive = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
    for download in (False, True):
        node.source.download = download
        with pytest.raises(DigitlabError) as e:
            read_data(node)
        message = str(e.value)
        assert f"download {archive}, unzip it and put emnist-balanced-train-images" in message
        assert f"in {raw}/" in message and "\n" not in message
        assert ("download=true cannot fetch EMNIST" in message) == download, message
        assert "set data.source.download=true" not in message
    assert list(tmp_path.iterdir()) == []
    # Without an archive to name, the files are named and where they go; no mirror: the same.
    from digitlab.data.sources import load_idx

    table = {part: [f"{part}.gz", "0" * 32] for part in ("train_images", "train_labels")}
    table |= {part: [f"{part}.gz", "0" * 32] for part in ("test_images", "test_labels")}
    with pytest.raises(DigitlabError, match="cannot fetch MINE: data.source.mirrors is empty"):
        load_idx(tmp_path, "MINE/raw", table, mirrors=[], download=True)
    with pytest.raises(DigitlabError, match=f"copy train_images.gz, .* into {tmp_path}/MINE/raw/"):
        load_idx(tmp_path, "MINE/raw", table, mirrors=[], download=False)


def test_every_mirror_tried_is_named(mirror, tmp_path, refused):
    url, served, files = mirror
    (served / NAMES[1]).unlink()
    with pytest.raises(DigitlabError) as e:
        download_mnist(tmp_path / "raw", [refused, url], files)
    message = str(e.value)
    assert f"{refused}{NAMES[0]}: [Errno 111] Connection refused" in message, message
    assert f"{url}{NAMES[1]}: File not found" in message, message
    assert "\n" not in message


@pytest.fixture
def hanging_up():
    """A mirror that accepts each connection and closes it unanswered; its count of them."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # the server closed: the test is over
                return
            accepted.append(connection)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/", accepted
    server.close()
    thread.join(5)


def test_a_mirror_that_does_not_answer_is_not_tried_for_every_file(tmp_path, hanging_up):
    """Offline, each file would wait out each mirror's timeout in turn: one try per mirror."""
    url, accepted = hanging_up
    files = tuple((name, "0" * 32) for name in NAMES)
    with pytest.raises(DigitlabError) as e:
        download_mnist(tmp_path / "raw", [url], files)
    assert len(accepted) == 1
    assert all(name in str(e.value) for name in NAMES) and url in str(e.value)
