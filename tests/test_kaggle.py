"""Kaggle CSV reader: round trip and one clear error per kind of broken file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digitlab.data.datamodule import DigitDataModule
from digitlab.data.kaggle import PIXELS, read_kaggle_csv
from digitlab.data.sources import DigitData
from digitlab.errors import DigitlabError

HEADER = "label," + ",".join(PIXELS)


def write(path, header: str, rows: list[str]) -> None:
    path.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode())


def row(label, pixels) -> str:
    return ",".join(map(str, [label, *pixels]))


def test_train_csv_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 784))
    labels = [3, 0, 9, 5]
    write(tmp_path / "train.csv", HEADER, [row(lab, img) for lab, img in zip(labels, images)])
    x, y = read_kaggle_csv(tmp_path / "train.csv")
    assert x.dtype == torch.uint8 and x.shape == (4, 28, 28)
    assert np.array_equal(x.reshape(4, -1).numpy(), images)
    assert y.dtype == torch.int64 and y.tolist() == labels


@pytest.mark.parametrize(("newline", "bom"), [("\n", b""), ("\r\n", b"\xef\xbb\xbf"), ("\n", b"\xef\xbb\xbf")])
def test_lf_only_and_byte_order_marked_csv_read_the_same(tmp_path, newline, bom):
    """Kaggle ships CRLF; a CSV re-saved on Linux has LF only, one saved by Excel a UTF-8 BOM."""
    images = np.random.default_rng(3).integers(0, 256, size=(3, 784))
    labels = [7, 1, 4]
    rows = [HEADER, *(row(lab, img) for lab, img in zip(labels, images, strict=True))]
    (tmp_path / "train.csv").write_bytes(bom + (newline.join(rows) + newline).encode())
    x, y = read_kaggle_csv(tmp_path / "train.csv")
    assert np.array_equal(x.reshape(3, -1).numpy(), images) and y.tolist() == labels


def test_test_csv_round_trip(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, size=(3, 784))
    write(tmp_path / "test.csv", ",".join(PIXELS), [",".join(map(str, i)) for i in images])
    x, y = read_kaggle_csv(tmp_path / "test.csv", labelled=False)
    assert y is None and np.array_equal(x.reshape(3, -1).numpy(), images)


def test_test_csv_where_train_csv_is_needed(tmp_path):
    write(tmp_path / "test.csv", ",".join(PIXELS), [",".join(["0"] * 784)])
    with pytest.raises(DigitlabError, match="no label column.*needs train.csv"):
        read_kaggle_csv(tmp_path / "test.csv")


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("label,a,b", ["1,2,3"], "has header label,a,b... with 3 columns"),
        (HEADER, [row(1, [0] * 784), row(2, [0] * 783)], "line 3 is short: column pixel783 is empty"),
        (HEADER, [row(1, [0] * 784), row(2, [0] * 785)], "every row needs 785 cells"),
        (HEADER, [row(1, ["x", *[0] * 783])], "line 2: pixel0 = 'x' is not an integer"),
        (HEADER, [row(1, [0] * 10 + [256] + [0] * 773)], "line 2: pixel10 = 256 is outside 0-255"),
        (HEADER, [row(1, [0] * 784), row(10, [0] * 784)], "line 3: label 10 is outside 0-9"),
        (HEADER, [row(1, [0.5] + [0] * 783)], "pixel0 = '0.5' is not an integer"),
    ],
    ids=["header", "short-row", "long-row", "non-numeric", "pixel-range", "label-range", "float"],
)
def test_broken_csv_gets_a_one_line_error(tmp_path, header, rows, message):
    write(tmp_path / "train.csv", header, rows)
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_split_seed_gives_every_seed_of_a_sweep_the_same_holdouts():
    """An ensemble of a seed sweep is scored on the test holdout: no member may have trained on it."""
    n = 200
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    data = DigitData(images, torch.arange(n) % 10)

    def holdouts(seed, split_seed):
        split = DigitDataModule(lambda: data, val_size=20, test_size=30, seed=seed, split_seed=split_seed).split()
        return {name: set(split[name][0][:, 0, 0].tolist()) for name in ("train", "val", "test")}

    fixed = [holdouts(seed, split_seed=0) for seed in (1, 2, 3)]
    assert fixed[0] == fixed[1] == fixed[2]
    assert len(fixed[0]["test"]) == 30 and not fixed[0]["test"] & fixed[0]["train"]
    assert holdouts(1, None)["test"] != holdouts(2, None)["test"]  # without it, the seed splits


@pytest.mark.parametrize(("val_size", "n_val"), [(0.25, 50), (0.1, 20), (37, 37)])
def test_val_size_is_a_count_or_a_fraction_of_the_training_rows(val_size, n_val):
    """README: ``data.val_size`` is an int (rows) or a float (fraction); the rest trains, once each."""
    n = 200
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    split = DigitDataModule(lambda: DigitData(images, torch.arange(n) % 10), val_size=val_size, seed=1).split()
    val, train = (split[name][0][:, 0, 0].tolist() for name in ("val", "train"))
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(val + train) == list(range(n))  # disjoint, and together every row
