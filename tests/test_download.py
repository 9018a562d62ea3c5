"""Checksum-verified downloads against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digitlab.data.download import download_files
from digitlab.data.sources import IDX_PARTS, read_data
from digitlab.errors import DigitlabError
from digitlab.jobs.inputs import data_config
from synthetic import write_idx, write_idx_set

NAMES = ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@contextlib.contextmanager
def serving(folder: Path):
    """``folder`` served at the URL yielded (http://127.0.0.1:<port>/) until the block ends."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def mirror(tmp_path):
    """A folder served at http://127.0.0.1:<port>/ for the test's duration, and its md5 table."""
    served = tmp_path / "served"
    served.mkdir()
    for i, name in enumerate(NAMES):
        write_idx(served / name, np.arange(10 + i, dtype=np.uint8) % 10)
    files = tuple((name, hashlib.md5((served / name).read_bytes()).hexdigest()) for name in NAMES)
    with serving(served) as url:
        yield url, served, files


def test_good_download_is_verified_and_idempotent(mirror, tmp_path):
    url, served, files = mirror
    raw = tmp_path / "raw"
    download_files(raw, files, [url])
    for name, _ in files:
        assert (raw / name).read_bytes() == (served / name).read_bytes()
    for name in NAMES:
        (served / name).unlink()  # a second call must not fetch anything
    download_files(raw, files, [url])


def test_wrong_checksum_deletes_the_file_and_says_so(mirror, tmp_path):
    url, _, files = mirror
    raw = tmp_path / "raw"
    wrong = ((files[0][0], "0" * 32), files[1])
    with pytest.raises(DigitlabError, match="checksum mismatch, partial file deleted") as e:
        download_files(raw, wrong, [url])
    assert files[0][0] in str(e.value) and str(raw) in str(e.value)
    assert not (raw / files[0][0]).exists()
    assert (raw / files[1][0]).exists()  # the good file stays


def test_file_missing_on_the_mirror(mirror, tmp_path):
    url, served, files = mirror
    (served / NAMES[1]).unlink()
    with pytest.raises(DigitlabError, match=f"MNIST files missing in .*{NAMES[1]}.*File not found"):
        download_files(tmp_path / "raw", files, [url])
    assert not (tmp_path / "raw" / NAMES[1]).exists()


def test_offline_names_the_folder_and_files(tmp_path):
    raw = tmp_path / "raw"
    files = tuple((name, "0" * 32) for name in NAMES)
    # A port bound and not listening, held while the download tries it: refused, like offline.
    with socket.socket() as closed, pytest.raises(DigitlabError) as e:
        closed.bind(("127.0.0.1", 0))
        download_files(raw, files, [f"http://127.0.0.1:{closed.getsockname()[1]}/"])
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


def mnist(root: Path, mirrors: list[str]):
    """conf/data/mnist.yaml's node reading from ``root``, downloading from ``mirrors``."""
    node = data_config("mnist", root)
    node.source.mirrors = mirrors
    return node


def test_a_root_that_does_not_exist_is_not_created(tmp_path, refused):
    """data.root=/nowhere created /nowhere/MNIST/raw and waited on the mirrors: now one line."""
    root = tmp_path / "nowhere"
    node = mnist(root, [refused])
    start = time.perf_counter()
    with pytest.raises(DigitlabError) as e:
        read_data(node)
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
        read_data(mnist(root, [refused]))
    assert not root.exists()  # tried there; the folders it made went with the failure


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist"])
def test_a_failed_download_leaves_no_folder_it_made(tmp_path, refused, name):
    """Offline, data=fashion_mnist left an empty FashionMNIST/raw/ in the (maybe shared) data
    root; a folder that was there before stays, and so does one a file arrived in."""
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
        download_files(raw, files, [url])
    assert [p.name for p in raw.iterdir()] == [NAMES[0]]


def test_emnist_missing_names_its_archive_and_the_download_that_fetches_it(tmp_path, refused):
    """EMNIST's files have no md5 of their own (NIST ships them in one archive): without a
    download the error names the archive, where its files go and data.source.download=true;
    no mirror is tried and no folder made."""
    node = data_config("emnist_balanced", tmp_path)
    raw = tmp_path / "EMNIST" / "raw"
    with pytest.raises(DigitlabError) as e:
        read_data(node)
    message = str(e.value)
    assert (
        f"download {node.source.archive}, unzip it and put emnist-balanced-train-images" in message
    )
    assert f"in {raw}/, set data.source.download=true" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
    # A set whose files have no md5 and no archive: never fetched, whatever download says.
    from digitlab.data.sources import load_idx

    table = {part: [f"{part}.gz", None] for part in IDX_PARTS}
    for download in (False, True):
        with pytest.raises(DigitlabError, match=f"copy train_images.gz, .* into {tmp_path}/MINE/"):
            load_idx(tmp_path, "MINE/raw", table, download=download)
    message = "cannot fetch MINE: data.source.files gives no md5 for its files"
    with pytest.raises(DigitlabError, match=message):
        load_idx(tmp_path, "MINE/raw", table, download=True)
    # With md5s: the mirrors given, else torchvision's for the set, which has none for MINE.
    table = {part: [f"{part}.gz", "0" * 32] for part in IDX_PARTS}
    with pytest.raises(DigitlabError, match="cannot fetch MINE: data.source.mirrors is empty"):
        load_idx(tmp_path, "MINE/raw", table, mirrors=[], download=True)
    with pytest.raises(DigitlabError, match="mirrors is null and torchvision.datasets has no MINE"):
        load_idx(tmp_path, "MINE/raw", table, download=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "MINE" / "raw").mkdir(parents=True)
    with pytest.raises(DigitlabError, match="copy them there, set data.source.download=true"):
        load_idx(tmp_path, "MINE/raw", table, mirrors=[], download=False)


@pytest.fixture
def emnist_archive(tmp_path):
    """A tiny EMNIST archive laid out as NIST's (gzip/emnist-balanced-*.gz, plus another split),
    served at http://127.0.0.1:<port>/gzip.zip; its URL, md5 and the upright arrays it holds."""
    node = data_config("emnist_balanced", tmp_path)
    names = {part: node.source.files[part][0] for part in IDX_PARTS}
    packed = tmp_path / "packed"
    arrays = write_idx_set(packed / "gzip", names, 47, transposed=True, n_train=60, n_test=20)
    write_idx(packed / "gzip" / "emnist-letters-test-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    served = tmp_path / "served"
    shutil.make_archive(str(served / "gzip"), "zip", packed)
    md5 = hashlib.md5((served / "gzip.zip").read_bytes()).hexdigest()
    with serving(served) as url:
        yield f"{url}gzip.zip", md5, arrays


def test_emnist_is_fetched_from_its_archive_checksum_verified(tmp_path, emnist_archive):
    """data.source.download=true said it could not fetch EMNIST: it now downloads the archive
    torchvision.datasets.EMNIST names, checks its md5 and unpacks this set's four files."""
    from torchvision.datasets import EMNIST

    url, md5, arrays = emnist_archive
    root = tmp_path / "data"
    root.mkdir()
    node = data_config("emnist_balanced", root)
    assert (node.source.archive, node.source.archive_md5) == (EMNIST.url, EMNIST.md5)
    node.source.archive, node.source.download = url, True
    node.source.archive_md5 = "0" * 32
    with pytest.raises(DigitlabError) as e:
        read_data(node)
    message = str(e.value)
    assert f"{url}: checksum mismatch, partial file deleted" in message and "\n" not in message
    assert list(root.iterdir()) == []  # no archive, no unpacked rest, no folder
    node.source.archive_md5 = md5
    data = read_data(node)
    assert np.array_equal(data.train_images.numpy(), arrays["train_images"])  # upright
    assert np.array_equal(data.test_labels.numpy(), arrays["test_labels"])
    raw = root / "EMNIST" / "raw"
    kept = sorted(p.name for p in raw.iterdir())
    assert kept == sorted([*(f.name for f in data.files), "gzip.zip"]), kept  # no other split


def test_mirrors_null_downloads_from_torchvisions_mirrors_for_the_set(
    tmp_path, mirror, monkeypatch
):
    """conf/data/ gives no mirror list of its own: a download uses the torchvision.datasets
    class's that the folder names (here FashionMNIST's, pointed at the local server)."""
    from torchvision.datasets import FashionMNIST

    url, served, files = mirror
    monkeypatch.setattr(FashionMNIST, "mirrors", [url])
    node = data_config("fashion_mnist", tmp_path)
    assert node.source.mirrors is None
    table = dict(zip(IDX_PARTS, [*files, *files], strict=True))
    node.source.files = {part: [name, md5] for part, (name, md5) in table.items()}
    with pytest.raises(DigitlabError, match="not 28x28 images"):  # labels where images go
        read_data(node)
    for name, _ in files:
        assert (tmp_path / "FashionMNIST" / "raw" / name).read_bytes() == (
            served / name
        ).read_bytes()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_the_idx_yamls_tables_are_torchvisions(name):
    """One source of truth: each file table is its torchvision.datasets class's ``resources``."""
    import torchvision.datasets

    source = data_config(name, None).source
    dataset = getattr(torchvision.datasets, source.folder.split("/")[0])
    assert [tuple(source.files[part]) for part in IDX_PARTS] == list(dataset.resources)


def test_every_mirror_tried_is_named(mirror, tmp_path, refused):
    url, served, files = mirror
    (served / NAMES[1]).unlink()
    with pytest.raises(DigitlabError) as e:
        download_files(tmp_path / "raw", files, [refused, url])
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
        download_files(tmp_path / "raw", files, [url])
    assert len(accepted) == 1
    assert all(name in str(e.value) for name in NAMES) and url in str(e.value)
