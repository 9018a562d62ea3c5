"""Reader for Kaggle "Digit Recognizer" CSV files (label,pixel0..pixel783), checked cell by cell."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

PIXELS = [f"pixel{i}" for i in range(784)]
TRAIN_HEADER = ["label", *PIXELS]


# The longest line Kaggle's layout holds is its header (about 7 KB of "pixelN,"; a row of 785
# values of at most 3 digits is 3.2 KB). Twice that leaves room for spaces and whole numbers
# written as "255.0"; a longer line is not this layout, and is refused before it is read whole.
MAX_LINE = 16 * 1024
_CHUNK = 1 << 18  # bytes checked at a time: memory stays bounded whatever the file's size
# The bytes CSV text may hold: all but the control characters, tab and line ends excepted.
_TEXT = bytes([9, 10, 13, *range(32, 127), *range(128, 256)])
_WIDE_BOMS = (  # byte-order marks of the wide encodings (UTF-32's first: it starts like UTF-16's)
    ("UTF-32", codecs.BOM_UTF32_LE),
    ("UTF-32", codecs.BOM_UTF32_BE),
    ("UTF-16", codecs.BOM_UTF16_LE),
    ("UTF-16", codecs.BOM_UTF16_BE),
)


def read_kaggle_csv(
    path: Path, labelled: bool | None = True, classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) (None for an unlabelled file).

    ``labelled=True`` expects Kaggle's train.csv layout, ``False`` its test.csv layout, ``None``
    either, by the header's first column. Labels are refused below 0 and, given ``classes``
    (how many the data set has), from ``classes`` on.
    """
    import pandas as pd  # heavy; only needed when a CSV is read

    path = Path(path)
    header = read_header(path)
    if labelled is None:
        labelled = header[:1] == ["label"]
    expected = TRAIN_HEADER if labelled else PIXELS
    if header != expected:
        if labelled and header == PIXELS:
            raise DigitlabError(
                f"{path} has no label column (it looks like Kaggle's test.csv): "
                "training needs train.csv (label,pixel0,...,pixel783), "
                "e.g. data.source.file=train.csv"
            )
        raise DigitlabError(
            f"{path} has header {excerpt(','.join(header[:3]) + '...')} with {len(header)} "
            f"columns: expected {','.join(expected[:3])},...,pixel783 ({len(expected)} columns), "
            "Kaggle's layout"
        )
    _check_text(path)  # pandas would read a binary file or an endless line whole, then fail
    try:
        frame = pd.read_csv(path, engine="c", encoding="utf-8-sig")
    except pd.errors.ParserError as e:
        detail = excerpt(" ".join(str(e).split()), 200)  # pandas spreads its message over lines
        raise DigitlabError(f"{path}: {detail} (every row needs {len(expected)} cells)") from None
    except OSError as e:
        raise _unreadable(path, e) from None
    if frame.empty:
        raise DigitlabError(
            f"{path} has a header but no rows: add rows in Kaggle's layout, one image each"
        )
    _check_cells(path, frame, len(expected))
    values = frame.to_numpy()
    pixels = values[:, 1:] if labelled else values
    if pixels.min() < 0 or pixels.max() > 255:
        row, col = np.argwhere((pixels < 0) | (pixels > 255))[0]
        raise DigitlabError(
            f"{path} line {row + 2}: pixel{col} = {pixels[row, col]} is outside 0-255: "
            "fix or delete that row"
        )
    labels = values[:, 0] if labelled else None
    above = np.inf if classes is None else classes  # the first label out of range
    if labels is not None and ((labels < 0) | (labels >= above)).any():
        row = int(np.argmax((labels < 0) | (labels >= above)))
        label, fix = labels[row], "fix or delete that row"
        if label < 0:
            raise DigitlabError(f"{path} line {row + 2}: label {label} is below 0: {fix}")
        raise DigitlabError(
            f"{path} line {row + 2}: label {label} is outside 0-{above - 1}, the {classes} "
            f"classes data.classes names: {fix}, or list every class in data.classes"
        )
    import torch  # only once the file has passed its checks (torch takes seconds to import)

    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    if labels is None:
        return images, None
    return images, torch.from_numpy(labels.astype(np.int64))


def read_header(path: Path) -> list[str]:
    """The first line's cells, read as at most ``MAX_LINE`` bytes of UTF-8 text.

    A UTF-8 byte-order mark (Excel writes one) is not part of the header.
    """
    try:
        with _open(path) as f:
            head = f.read(MAX_LINE + 1)
    except OSError as e:
        raise _unreadable(path, e) from None
    for name, bom in _WIDE_BOMS:
        if head.startswith(bom):
            raise DigitlabError(
                f"{path} is {name} text: save it as UTF-8 (or ASCII), the encoding of Kaggle's CSV"
            )
    ends = [at for at in (head.find(b"\n"), head.find(b"\r")) if at >= 0]  # CR alone ends it too
    line = head[: min(ends, default=len(head))]
    _check_lines(path, line, 1)
    return line.decode("utf-8-sig").strip().split(",")


def excerpt(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters: a message quotes a cell, never a whole line."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _open(path: Path):
    """``path`` opened for reading bytes; one line for a missing file or a folder."""
    if path.is_dir():
        raise DigitlabError(
            f"{path} is a folder, not a file: give the path of a CSV in Kaggle's layout"
        )
    if not path.exists():
        raise DigitlabError(
            f"{path} is missing: put Kaggle's digit-recognizer CSV files in {path.parent}"
        )
    return path.open("rb")


def _unreadable(path: Path, error: OSError) -> DigitlabError:
    return DigitlabError(
        f"cannot read {path} ({error.strerror or error}): make it readable (chmod a+r {path.name})"
        " or copy it somewhere readable"
    )


def _check_text(path: Path) -> None:
    """Every line of ``path`` UTF-8 text, without control bytes, at most ``MAX_LINE`` bytes long.

    The file is read ``_CHUNK`` bytes at a time, each piece checked up to its last line end (the
    rest carries over), so a bad file is refused from its first bad bytes.
    """
    line, carry = 1, b""
    try:
        with _open(path) as f:
            while chunk := f.read(_CHUNK):
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                _check_lines(path, data[:cut], line)
                line = _line_of(data, cut, line)
                carry = data[cut:]
                if len(carry) > MAX_LINE:
                    _check_lines(path, carry, line)
    except OSError as e:
        raise _unreadable(path, e) from None
    _check_lines(path, carry, line)


def _check_lines(path: Path, data: bytes, first: int) -> None:
    """``data``: whole lines of the file from line ``first`` on (the last may lack its end)."""
    if first == 1:
        data = data.removeprefix(codecs.BOM_UTF8)
    if control := data.translate(None, _TEXT):  # the bytes that are no text, in file order
        at = data.find(control[:1])
        raise DigitlabError(
            f"{path} line {_line_of(data, at, first)} holds byte 0x{control[0]:02x}, not "
            "CSV text (a binary file, or UTF-16 text?): give a CSV saved as UTF-8 text, as Kaggle "
            "ships it"
        )
    array = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero((array == 10) | (array == 13))  # a lone CR ends a line for pandas too
    starts = np.concatenate(([0], ends + 1))
    lengths = np.append(ends, len(data)) - starts
    if lengths.max() > MAX_LINE:
        at = int(starts[np.argmax(lengths > MAX_LINE)])
        raise DigitlabError(
            f"{path} line {_line_of(data, at, first)} is longer than {MAX_LINE} bytes, which no "
            "row of Kaggle's layout is (label,pixel0,...,pixel783: at most 785 numbers): is it a "
            "digit-recognizer CSV?"
        )
    if not data.isascii():  # ASCII is UTF-8: decode only what might not be
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DigitlabError(
                f"{path} line {_line_of(data, e.start, first)} is not UTF-8 text (byte "
                f"0x{data[e.start]:02x}): save it as UTF-8 (or ASCII), the encoding of Kaggle's CSV"
            ) from None


def _line_of(data: bytes, at: int, first: int) -> int:
    """The file's line number of byte ``at`` of ``data``, whose first line is line ``first``."""
    return first + data.count(b"\n", 0, at)


def _check_cells(path: Path, frame, width: int) -> None:
    """Every cell present and an integer; otherwise name the first bad line and column."""
    import pandas as pd

    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_integer_dtype(series.dtype):
            continue
        missing = series.isna()
        if missing.any():
            row = int(np.argmax(missing.to_numpy()))
            raise DigitlabError(
                f"{path} line {row + 2} is short: column {column} is empty "
                f"(every row needs {width} cells); complete or delete that row"
            )
        numbers = pd.to_numeric(series, errors="coerce")
        bad = (numbers.isna() | (numbers != numbers.round())).to_numpy()
        if not bad.any():  # whole numbers written as floats (e.g. "3.0") are fine
            continue
        row = int(np.argmax(bad))
        raise DigitlabError(
            f"{path} line {row + 2}: {column} = '{excerpt(str(series.iloc[row]))}' is not an "
            "integer: fix that cell"
        )
