"""IDX reader: round trips (gz and raw) and one clear error per kind of broken file."""

from __future__ import annotations

import gzip
import os
import pathlib
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from digitlab.data.idx import read_images, read_labels
from digitlab.errors import DigitlabError
from synthetic import write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_images_and_labels_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lbl{suffix}", labels)

    read_back = read_images(tmp_path / f"img{suffix}")
    assert read_back.dtype == torch.uint8 and read_back.shape == (7, 28, 28)
    assert np.array_equal(read_back.numpy(), images)
    read_labels_back = read_labels(tmp_path / f"lbl{suffix}")
    assert read_labels_back.dtype == torch.int64
    assert read_labels_back.tolist() == labels.tolist()


def test_gzip_is_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    write_idx(tmp_path / "x.gz", labels)
    (tmp_path / "x.gz").rename(tmp_path / "plain-name")
    assert read_labels(tmp_path / "plain-name").tolist() == [3, 1, 4]


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(DigitlabError, match="wrong IDX magic number \\(12345678\\)"):
        read_images(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "img.gz"
    write_idx(path, np.zeros((5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DigitlabError, match="not a readable gzip file"):
        read_images(path)


def test_payload_shorter_than_header_says(tmp_path):
    path = tmp_path / "img"
    write_idx(path, np.zeros((5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DigitlabError, match="truncated or corrupt"):
        read_images(path)


def header(*dims: int) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


def peak_bytes(read, path) -> tuple[str, int]:
    """The DigitlabError ``read(path)`` raises, and the most memory Python held meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(DigitlabError) as error:
            read(path)
        return str(error.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_header_dims_whose_product_overflows_int64(tmp_path):
    """2^31 x 2^31 x 2^31 is 2^93 bytes: numpy's int64 product wrapped to 0 (\"needs 16\")."""
    path = tmp_path / "img"
    path.write_bytes(header(2**31, 2**31, 2**31) + bytes(100))
    with pytest.raises(DigitlabError) as error:
        read_images(path)
    message = str(error.value)
    assert f"needs {2**93 + 16}" in message and "holds 116 bytes" in message, message
    assert "\n" not in message


def test_header_is_checked_against_the_file_size_before_the_payload_is_read(tmp_path):
    """A 64 MB file (sparse) whose header claims a million images is refused unread."""
    path = tmp_path / "img"
    path.write_bytes(header(10**6, 28, 28))
    os.truncate(path, 64 << 20)
    message, peak = peak_bytes(read_images, path)
    assert f"holds {64 << 20} bytes but its header (1000000, 28, 28) needs" in message
    assert peak < 1 << 20, f"read {peak} bytes"
    path.write_bytes(header(10, 28, 28))
    os.truncate(path, 64 << 20)  # room to spare is as wrong: refused unread too
    message, peak = peak_bytes(read_images, path)
    assert "needs 7856: the file is truncated or corrupt" in message and peak < 1 << 20


def test_gzip_header_larger_than_any_gzip_of_its_size_can_hold(tmp_path):
    """Deflate expands at most about 1032:1: a .gz of 41 bytes cannot hold 2^31 images."""
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(header(2**31 - 1, 28, 28) + bytes(1000)))
    message, peak = peak_bytes(read_images, path)
    assert "holds 41 bytes of gzip, which cannot hold the 1683627179264 bytes" in message
    assert peak < 1 << 20, f"read {peak} bytes"


def test_gzip_payload_longer_than_its_header_is_read_only_as_far_as_the_header_says(tmp_path):
    """A .gz of 10 images' header and 64 MB of payload stops being read after the 10 images."""
    path = tmp_path / "img.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip format
    with path.open("wb") as f:
        f.write(compressor.compress(header(10, 28, 28)))
        block = bytes(1 << 20)
        for _ in range(64):
            f.write(compressor.compress(block))
        f.write(compressor.flush())
    message, peak = peak_bytes(read_images, path)
    assert "longer than its header (10, 28, 28) says (7856 bytes once" in message, message
    assert peak < 4 << 20, f"read {peak} bytes"


def test_unreadable_idx_file_says_so(tmp_path, monkeypatch):
    """As root, chmod 000 does not stop reading: opening is refused by a stand-in instead."""
    path = tmp_path / "img"
    write_idx(path, np.zeros((2, 28, 28), dtype=np.uint8))
    real_open = pathlib.Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    with pytest.raises(DigitlabError, match=f"cannot read {path} \\(Permission denied\\): make"):
        read_images(path)


def test_a_folder_in_place_of_an_idx_file_says_so(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(DigitlabError, match="is a folder, not a file"):
        read_images(tmp_path / "img")


def test_images_must_be_28_by_28(tmp_path):
    path = tmp_path / "img"
    write_idx(path, np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DigitlabError, match=r"\(32, 32\), not 28x28"):
        read_images(path)


def test_labels_file_must_be_one_dimensional_and_in_range(tmp_path):
    write_idx(tmp_path / "img", np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(DigitlabError, match="not labels"):
        read_labels(tmp_path / "img")
    write_idx(tmp_path / "lbl", np.array([1, 12], dtype=np.uint8))
    with pytest.raises(DigitlabError, match="label 12 outside 0-9, the 10 classes data.classes"):
        read_labels(tmp_path / "lbl", limit=10)
    assert read_labels(tmp_path / "lbl").tolist() == [1, 12]  # no limit: the caller checks


def test_missing_file_names_the_folder(tmp_path):
    with pytest.raises(DigitlabError, match=f"{tmp_path}"):
        read_images(tmp_path / "nope.gz")


def test_real_gzip_header_is_what_we_write(tmp_path):
    """write_idx output is plain gzip: the standard library reads it back byte for byte."""
    write_idx(tmp_path / "l.gz", np.array([7], dtype=np.uint8))
    assert gzip.decompress((tmp_path / "l.gz").read_bytes()) == bytes([0, 0, 8, 1, 0, 0, 0, 1, 7])


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_uncompressed_and_gzipped_files_alike(tmp_path, gz):
    """torchvision's layout holds the .gz files and, once extracted, the plain ones: both load."""
    from digitlab.data.sources import load_mnist
    from synthetic import N_TEST, N_TRAIN, synthetic_digits, write_mnist

    write_mnist(tmp_path, gz=gz)
    names = sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir())
    assert all(name.endswith(".gz") == gz for name in names)
    data = load_mnist(tmp_path, download=False)  # download=False: nothing may be fetched
    images, labels = synthetic_digits(N_TRAIN, 0)
    assert np.array_equal(data.train_images.numpy(), images)
    assert data.train_labels.tolist() == labels.tolist()
    assert data.test_images.shape == (N_TEST, 28, 28) and len(data.test_labels) == N_TEST


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_an_idx_file_is_told_from_its_first_bytes(tmp_path, suffix):
    """What lets `--data FILE` take an IDX file: its header's dimensions, compressed or not;
    None for anything else (a CSV, a broken gzip, a folder), which then gets --data's own line."""
    from digitlab.data.idx import idx_dims

    write_idx(tmp_path / f"img{suffix}", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / f"lbl{suffix}", np.zeros(2, np.uint8))
    assert idx_dims(tmp_path / f"img{suffix}") == 3 and idx_dims(tmp_path / f"lbl{suffix}") == 1
    (tmp_path / "x.csv").write_text("label,pixel0\n1,0\n")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b not gzip")
    for other in ("x.csv", "broken.gz", "missing", "."):
        assert idx_dims(tmp_path / other) is None
