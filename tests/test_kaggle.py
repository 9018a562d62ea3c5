"""Kaggle CSV reader: round trip and one clear error per kind of broken file."""

from __future__ import annotations

import os
import pathlib
import time
import tracemalloc

import numpy as np
import pytest
import torch

from digitlab.data.datamodule import DigitDataModule
from digitlab.data.kaggle import PIXELS, read_kaggle_csv
from digitlab.data.sources import DigitData, load_kaggle
from digitlab.errors import DigitlabError

HEADER = "label," + ",".join(PIXELS)


def write(path, header: str, rows: list[str]) -> None:
    path.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode())


def row(label, pixels) -> str:
    return ",".join(map(str, [label, *pixels]))


def test_train_csv_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 784))
    labels = [3, 0, 9, 5]
    rows = [row(lab, img) for lab, img in zip(labels, images, strict=True)]
    write(tmp_path / "train.csv", HEADER, rows)
    x, y = read_kaggle_csv(tmp_path / "train.csv")
    assert x.dtype == torch.uint8 and x.shape == (4, 28, 28)
    assert np.array_equal(x.reshape(4, -1).numpy(), images)
    assert y.dtype == torch.int64 and y.tolist() == labels


@pytest.mark.parametrize(
    ("newline", "bom"),
    [("\n", b""), ("\r\n", b"\xef\xbb\xbf"), ("\n", b"\xef\xbb\xbf"), ("\r", b"")],
)
def test_lf_only_and_byte_order_marked_csv_read_the_same(tmp_path, newline, bom):
    """Kaggle ships CRLF; a CSV re-saved on Linux has LF only, one saved by Excel a UTF-8 BOM,
    one saved on a classic Mac CR only."""
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
        (
            HEADER,
            [row(1, [0] * 784), row(2, [0] * 783)],
            "line 3 is short: column pixel783 is empty",
        ),
        (HEADER, [row(1, [0] * 784), row(2, [0] * 785)], "every row needs 785 cells"),
        (HEADER, [row(1, ["x", *[0] * 783])], "line 2: pixel0 = 'x' is not an integer"),
        (HEADER, [row(1, [0] * 10 + [256] + [0] * 773)], "line 2: pixel10 = 256 is outside 0-255"),
        (HEADER, [row(1, [0] * 784), row(-1, [0] * 784)], "line 3: label -1 is below 0"),
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


ONE_ROW = row(1, [0] * 784)


@pytest.mark.parametrize("classes", [26, [chr(ord("A") + i) for i in range(26)]])
def test_the_label_range_is_data_classes(tmp_path, classes):
    """The reader took labels 0-9 whatever data.classes said: a 26-class CSV was refused. Its
    range is now data.classes' (a count or the names), and a label past it is one line naming
    the row and both fixes."""
    from digitlab.data.sources import read_data
    from digitlab.jobs.inputs import data_config

    folder = tmp_path / "digit-recognizer"
    folder.mkdir()
    labels = [*range(26), 25, 0]
    write(folder / "train.csv", HEADER, [row(label, [label] * 784) for label in labels])
    node = data_config("kaggle", tmp_path)
    node.classes = classes
    data = read_data(node)
    assert data.train_labels.tolist() == labels and data.train_images[3].max() == 3
    node.classes = 25
    with pytest.raises(DigitlabError) as error:
        read_data(node)
    one_line(
        error, "train.csv line 27: label 25 is outside 0-24", "list every class in data.classes"
    )
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(folder / "train.csv", classes=10)
    one_line(error, "line 12: label 10 is outside 0-9", "fix or delete that row")


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> str:
    """The message, checked to be one short line holding every fragment."""
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (
            (HEADER + "\r\n1," + "0," * 782).encode() + b"\xe9\r\n",
            ["line 2 is not UTF-8 text (byte 0xe9)", "save it as UTF-8"],
        ),
        (
            (HEADER + "\r\n" + ONE_ROW + "\r\n").encode("utf-16"),
            ["is UTF-16 text", "save it as UTF-8"],
        ),
        (
            (HEADER + "\r\n" + ONE_ROW + "\r\n").encode("utf-16-le"),  # no byte-order mark
            ["line 1 holds byte 0x00", "not CSV text"],
        ),
        (bytes(range(256)) * 10, ["line 1 holds byte 0x00", "not CSV text"]),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), ["line 1 is not UTF-8 text (byte 0x89)"]),
    ],
    ids=["latin-1", "utf-16", "utf-16-no-bom", "binary", "png"],
)
def test_csv_that_is_not_utf8_text_gets_one_line(tmp_path, content, fragments):
    (tmp_path / "train.csv").write_bytes(content)
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv")
    one_line(error, *fragments)


def test_predict_reads_the_header_of_a_non_utf8_csv_without_a_traceback(tmp_path):
    """digitlab-predict --data x.csv looks at the header for a label column before reading."""
    from digitlab.jobs.inputs import load_images

    path = tmp_path / "x.csv"
    path.write_bytes((HEADER + "\r\n" + ONE_ROW + "\r\n").encode("utf-16"))
    with pytest.raises(DigitlabError) as error:
        load_images(str(path), None)
    one_line(error, "is UTF-16 text")


def test_predict_tells_train_and_test_layouts_apart(tmp_path):
    from digitlab.jobs.inputs import load_images

    write(tmp_path / "train.csv", HEADER, [ONE_ROW])
    write(tmp_path / "test.csv", ",".join(PIXELS), [",".join(["0"] * 784)])
    assert load_images(str(tmp_path / "train.csv"), None)[1].tolist() == [1]
    images, labels = load_images(str(tmp_path / "test.csv"), None)
    assert labels is None and images.shape == (1, 28, 28)


def _sparse_nul_file(path: pathlib.Path, size: int, prefix: bytes = b"") -> pathlib.Path:
    """``prefix`` then NUL bytes up to ``size``: a sparse file, so it costs no disk and no time."""
    path.write_bytes(prefix)
    os.truncate(path, size)
    return path


@pytest.mark.parametrize("prefix", [b"", (HEADER + "\r\n").encode()], ids=["nul", "header+nul"])
def test_a_file_of_nul_bytes_is_refused_from_its_first_bytes(tmp_path, prefix):
    """Time and memory stay bounded whatever the size (a 1 GB NUL file took 12.7 GB and 164 s,
    then printed the whole line): 64 MB here, read in bounded pieces, the message a short line."""
    path = _sparse_nul_file(tmp_path / "train.csv", 64 << 20, prefix)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DigitlabError) as error:
            read_kaggle_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = "line 2" if prefix else "line 1"
    one_line(error, f"{line} holds byte 0x00", "not CSV text")
    assert peak < 4 << 20, f"read {peak} bytes at once"
    assert time.perf_counter() - start < 2


def test_a_line_too_long_for_kaggle_is_refused_before_it_is_read_whole(tmp_path):
    """A line without end (here 8 MB of digits and commas) is no Kaggle row: refused at 16 KiB."""
    path = tmp_path / "train.csv"
    path.write_bytes((HEADER + "\r\n").encode() + b"1," * (4 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DigitlabError) as error:
            read_kaggle_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(error, "line 2 is longer than 16384 bytes", "Kaggle's layout")
    assert peak < 4 << 20, f"read {peak} bytes at once"


def test_long_cells_are_quoted_as_a_short_excerpt(tmp_path):
    write(tmp_path / "train.csv", "x" * 5000 + ",b,c", ["1,2,3"])
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv")
    one_line(error, "has header xxxx", "x… with 3 columns")
    write(tmp_path / "train.csv", HEADER, [row(1, ["y" * 3000, *[0] * 783])])
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv")
    one_line(error, "line 2: pixel0 = 'yyyy", "…' is not an integer")


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads a chmod 000 file anyway; the monkeypatched test below covers it",
)
def test_unreadable_csv_says_so(tmp_path):
    write(tmp_path / "train.csv", HEADER, [ONE_ROW])
    (tmp_path / "train.csv").chmod(0)
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv")
    one_line(error, "cannot read", "Permission denied", "make it readable")


def test_unreadable_csv_says_so_whoever_runs_the_tests(tmp_path, monkeypatch):
    """The suite runs as root, which chmod 000 does not stop: opening is refused here instead."""
    write(tmp_path / "train.csv", HEADER, [ONE_ROW])
    real_open = pathlib.Path.open

    def refuse(self, *args, **kwargs):
        if self.name == "train.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    for labelled in (True, None):  # None: predict's look at the header
        with pytest.raises(DigitlabError) as error:
            read_kaggle_csv(tmp_path / "train.csv", labelled=labelled)
        one_line(
            error, f"cannot read {tmp_path / 'train.csv'} (Permission denied)", "make it readable"
        )


def test_a_folder_named_like_the_csv_is_named_a_folder(tmp_path):
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "x.csv")
    one_line(error, "is a folder, not a file")


@pytest.mark.parametrize("labelled", [True, False])
def test_header_only_csv_has_no_rows(tmp_path, labelled):
    header = HEADER if labelled else ",".join(PIXELS)
    write(tmp_path / "train.csv", header, [])
    with pytest.raises(DigitlabError) as error:
        read_kaggle_csv(tmp_path / "train.csv", labelled=labelled)
    one_line(error, "has a header but no rows", "add rows")


@pytest.mark.parametrize("rows", [[], [ONE_ROW]], ids=["header-only", "one-row"])
def test_training_set_too_small_to_split_says_so(tmp_path, rows):
    """Not ``data.val_size=0.2 leaves no data ...: use 1..-1``: the file is what is wrong."""
    (tmp_path / "digit-recognizer").mkdir()
    write(tmp_path / "digit-recognizer" / "train.csv", HEADER, rows)
    with pytest.raises(DigitlabError) as error:
        load_kaggle(tmp_path)
    message = one_line(error, "add rows")
    assert "1..-1" not in message and "1..0" not in message
    if rows:
        one_line(error, "holds 1 row", "training needs at least 2")


def test_split_seed_gives_every_seed_of_a_sweep_the_same_holdouts():
    """An ensemble of a seed sweep is scored on the test holdout: no member may have trained
    on it."""
    n = 200
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    data = DigitData(images, torch.arange(n) % 10)

    def holdouts(seed, split_seed):
        split = DigitDataModule(
            lambda: data, val_size=20, test_size=30, seed=seed, split_seed=split_seed
        ).split()
        return {name: set(split[name][0][:, 0, 0].tolist()) for name in ("train", "val", "test")}

    fixed = [holdouts(seed, split_seed=0) for seed in (1, 2, 3)]
    assert fixed[0] == fixed[1] == fixed[2]
    assert len(fixed[0]["test"]) == 30 and not fixed[0]["test"] & fixed[0]["train"]
    assert holdouts(1, None)["test"] != holdouts(2, None)["test"]  # without it, the seed splits


@pytest.mark.parametrize(("val_size", "n_val"), [(0.25, 50), (0.1, 20), (37, 37)])
def test_val_size_is_a_count_or_a_fraction_of_the_training_rows(val_size, n_val):
    """README: ``data.val_size`` is an int (rows) or a float (fraction); the rest trains, once
    each."""
    n = 200
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    data = DigitData(images, torch.arange(n) % 10)
    split = DigitDataModule(lambda: data, val_size=val_size, seed=1).split()
    val, train = (split[name][0][:, 0, 0].tolist() for name in ("val", "train"))
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(val + train) == list(range(n))  # disjoint, and together every row
