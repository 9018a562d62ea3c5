"""Reader for the IDX files MNIST ships in (gzip-compressed or not), with real validation.

Not torchvision's ``read_image_file``: it reads only uncompressed files (torchvision unpacks each
``.gz`` beside it first, which a read-only data root refuses), reads a file whole before checking
its header, checks it with ``assert`` and names neither the file nor the fix.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

_UBYTE = 0x08  # IDX type code of unsigned bytes: the only type MNIST uses
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate expands data at most about 1032:1 (zlib's technical details), so a .gz of n bytes
# holds at most this many times n: a header that claims more is refused before decompressing.
_MAX_GZIP_RATIO = 1032
_CHUNK = 1 << 24  # bytes decompressed at a time: a .gz longer than its header says stops early


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file of unsigned bytes into an array of the shape its header declares.

    The header is checked against the file's size before the payload is read, so a broken file
    is refused without reading (or decompressing) more than its header promised.
    """
    path = Path(path)
    if path.is_dir():
        raise DigitlabError(f"{path} is a folder, not a file: put the MNIST IDX files there")
    try:
        with path.open("rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            size = os.fstat(f.fileno()).st_size
            if not gzipped:
                return _decode(path, f, size, gzipped)
            with gzip.GzipFile(fileobj=f) as unzipped:
                return _decode(path, unzipped, size, gzipped)
    except FileNotFoundError:
        raise DigitlabError(
            f"{path} is missing: put the MNIST IDX files in {path.parent}"
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DigitlabError(
            f"{path} is not a readable gzip file ({e}): delete it and download it again"
        ) from None
    except OSError as e:
        raise DigitlabError(
            f"cannot read {path} ({e.strerror or e}): make it readable (chmod a+r {path.name}) or "
            "copy the MNIST files somewhere readable"
        ) from None


def idx_dims(path: Path) -> int | None:
    """The number of dimensions the IDX header of ``path`` declares (1: labels, 3: images),
    compressed or not; None when the file does not start as an IDX file of unsigned bytes (or
    cannot be read: :func:`read_idx` then says why)."""
    try:
        with Path(path).open("rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            with gzip.GzipFile(fileobj=f) if gzipped else contextlib.nullcontext(f) as data:
                magic = data.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    if len(magic) < 4 or magic[:3] != bytes([0, 0, _UBYTE]) or not 1 <= magic[3] <= 3:
        return None
    return magic[3]


def _decode(path: Path, f: io.BufferedIOBase, size: int, gzipped: bool) -> np.ndarray:
    """The array in ``f``: the file of ``size`` bytes, decompressed when ``gzipped``."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:3] != bytes([0, 0, _UBYTE]) or not 1 <= magic[3] <= 3:
        raise DigitlabError(
            f"{path} has a wrong IDX magic number ({magic.hex()}): expected 00000801 (labels) "
            "or 00000803 (images); is it an MNIST file?"
        )
    ndim = magic[3]
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DigitlabError(f"{path} is truncated inside its header: download it again")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    header, count = 4 + 4 * ndim, math.prod(shape)  # Python's ints: numpy's int64 overflows
    if gzipped and header + count > size * _MAX_GZIP_RATIO:
        raise DigitlabError(
            f"{path} holds {size} bytes of gzip, which cannot hold the {header + count} bytes "
            f"its header {shape} needs: the file is truncated or corrupt, download it again"
        )
    if not gzipped and size != header + count:
        raise DigitlabError(
            f"{path} holds {size} bytes but its header {shape} needs {header + count}: "
            "the file is truncated or corrupt, download it again"
        )
    payload = _read_at_most(f, count + 1)  # one byte more tells a file longer than its header
    if len(payload) > count:
        raise DigitlabError(
            f"{path} is longer than its header {shape} says ({header + count} bytes once "
            "decompressed): the file is corrupt, download it again"
        )
    if len(payload) < count:
        raise DigitlabError(
            f"{path} holds {header + len(payload)} bytes once decompressed but its header "
            f"{shape} needs {header + count}: the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)  # writable: a bytearray's


def _read_at_most(f: io.BufferedIOBase, n: int) -> bytearray:
    """Up to ``n`` bytes of ``f``, read in pieces: memory grows with what arrives, not ``n``."""
    data = bytearray()
    while len(data) < n and (piece := f.read(min(_CHUNK, n - len(data)))):
        data += piece
    return data


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

    return torch.from_numpy(array)  # read_idx's array is writable and its own: no copy


def read_labels(path: Path, limit: int | None = None) -> torch.Tensor:
    """int64 labels (N,) from an IDX1 file, each below ``limit`` (the number of classes
    ``data.classes`` names) unless it is None."""
    array = read_idx(path)
    if array.ndim != 1:
        raise DigitlabError(
            f"{path} holds {array.ndim}-d data, not labels: is it an MNIST label file "
            "(…-labels-idx1-ubyte)?"
        )
    if limit is not None and array.size and array.max() >= limit:
        raise DigitlabError(
            f"{path} has a label {int(array.max())} outside 0-{limit - 1}, the {limit} classes "
            "data.classes names: list every class in data.classes, or replace a corrupt file"
        )
    import torch

    return torch.from_numpy(array.astype(np.int64))
