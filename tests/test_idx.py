"""IDX reader: round trips (gz and raw) and one clear error per kind of broken file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from digitlab.data.idx import read_images, read_labels, write_idx
from digitlab.errors import DigitlabError


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
    with pytest.raises(DigitlabError, match="label 12 outside 0-9"):
        read_labels(tmp_path / "lbl")


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
    from digitlab.data.synthetic import N_TEST, N_TRAIN, synthetic_digits, write_mnist

    write_mnist(tmp_path, gz=gz)
    names = sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir())
    assert all(name.endswith(".gz") == gz for name in names)
    data = load_mnist(tmp_path, download=False)  # download=False: nothing may be fetched
    images, labels = synthetic_digits(N_TRAIN, 0)
    assert np.array_equal(data.train_images.numpy(), images)
    assert data.train_labels.tolist() == labels.tolist()
    assert data.test_images.shape == (N_TEST, 28, 28) and len(data.test_labels) == N_TEST
