"""Reader for Kaggle "Digit Recognizer" CSV files (label,pixel0..pixel783), validated cell by cell."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

PIXELS = [f"pixel{i}" for i in range(784)]
TRAIN_HEADER = ["label", *PIXELS]


def read_kaggle_csv(path: Path, labelled: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) (None when ``labelled`` is False).

    ``labelled=True`` expects Kaggle's train.csv layout, ``False`` its test.csv layout.
    """
    import pandas as pd  # heavy; only needed when a CSV is read

    path = Path(path)
    if not path.is_file():
        raise DigitlabError(
            f"{path} is missing: put Kaggle's digit-recognizer CSV files in {path.parent}"
        )
    expected = TRAIN_HEADER if labelled else PIXELS
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark, which is not part of the header.
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = f.readline().strip().split(",")
    if header != expected:
        if labelled and header == PIXELS:
            raise DigitlabError(
                f"{path} has no label column (it looks like Kaggle's test.csv): "
                "training needs train.csv (label,pixel0,...,pixel783), e.g. data.source.file=train.csv"
            )
        raise DigitlabError(
            f"{path} has header {','.join(header[:3])}... with {len(header)} columns: expected "
            f"{','.join(expected[:3])},...,pixel783 ({len(expected)} columns), Kaggle's layout"
        )
    try:
        frame = pd.read_csv(path, engine="c", encoding="utf-8-sig")
    except pd.errors.ParserError as e:
        detail = " ".join(str(e).split())  # pandas spreads its message over lines
        raise DigitlabError(f"{path}: {detail} (every row needs {len(expected)} cells)") from None
    _check_cells(path, frame, len(expected))
    values = frame.to_numpy()
    pixels = values[:, 1:] if labelled else values
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        row, col = np.argwhere((pixels < 0) | (pixels > 255))[0]
        raise DigitlabError(
            f"{path} line {row + 2}: pixel{col} = {pixels[row, col]} is outside 0-255: "
            "fix or delete that row"
        )
    labels = values[:, 0] if labelled else None
    if labelled and labels.size and (labels.min() < 0 or labels.max() > 9):
        row = int(np.argmax((labels < 0) | (labels > 9)))
        raise DigitlabError(
            f"{path} line {row + 2}: label {labels[row]} is outside 0-9: fix or delete that row"
        )
    import torch  # only once the file has passed its checks (torch takes seconds to import)

    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    if not labelled:
        return images, None
    return images, torch.from_numpy(labels.astype(np.int64))


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
            f"{path} line {row + 2}: {column} = '{series.iloc[row]}' is not an integer: fix that cell"
        )
