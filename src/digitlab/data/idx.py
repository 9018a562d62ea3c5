"""Reader for the IDX files MNIST ships in (gzip-compressed or not), with real validation.

torchvision's ``read_image_file`` checks its input with ``assert`` and gives no hint about which file
is broken; this reader names the file and the problem, which is what a user needs to fix it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

_UBYTE = 0x08  # IDX type code of unsigned bytes: the only type MNIST uses


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file of unsigned bytes into an array of the shape its header declares."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
    except FileNotFoundError:
        raise DigitlabError(f"{path} is missing: put the MNIST IDX files in {path.parent}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DigitlabError(
            f"{path} is not a readable gzip file ({e}): delete it and download it again"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or not 1 <= data[3] <= 3:
        raise DigitlabError(
            f"{path} has a wrong IDX magic number ({data[:4].hex()}): expected 00000801 (labels) "
            "or 00000803 (images); is it an MNIST file?"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DigitlabError(f"{path} is truncated inside its header: download it again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) + header
    if len(data) != expected:
        raise DigitlabError(
            f"{path} holds {len(data)} bytes but its header {shape} needs {expected}: "
            "the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# torch is imported only once a file has passed its checks: a bad file answers in a fraction of a
# second instead of after the seconds torch takes to import.


def read_images(path: Path, size: int = 28) -> torch.Tensor:
    """uint8 images (N, size, size) from an IDX3 file."""
    array = read_idx(path)
    if array.ndim != 3 or array.shape[1:] != (size, size):
        raise DigitlabError(
            f"{path} holds arrays of shape {array.shape[1:]}, not {size}x{size} images: "
            "is it an MNIST image file (…-images-idx3-ubyte)?"
        )
    import torch

    return torch.from_numpy(array.copy())


def read_labels(path: Path) -> torch.Tensor:
    """int64 labels (N,) in 0..9 from an IDX1 file."""
    array = read_idx(path)
    if array.ndim != 1:
        raise DigitlabError(
            f"{path} holds {array.ndim}-d data, not labels: is it an MNIST label file "
            "(…-labels-idx1-ubyte)?"
        )
    if array.size and array.max() > 9:
        raise DigitlabError(f"{path} has a label {int(array.max())} outside 0-9: the file is corrupt")
    import torch

    return torch.from_numpy(array.astype(np.int64))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(payload) if str(path).endswith(".gz") else payload)
