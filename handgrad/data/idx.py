"""The IDX format of MNIST and Fashion-MNIST, read and written with NumPy.

Layout (big-endian): two zero bytes, a type byte, a byte ``ndim``, then ``ndim`` uint32 sizes, then the
values in C order. Type bytes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
Files may be gzipped (detected by the gzip magic bytes, not the file name).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy

__all__ = ["read_idx", "write_idx"]

_CODE_TO_DTYPE = {
    0x08: numpy.dtype(">u1"),
    0x09: numpy.dtype(">i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}
_DTYPE_TO_CODE = {d.newbyteorder("="): c for c, d in _CODE_TO_DTYPE.items()}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # truncated or damaged gzip stream
        raise ValueError(f"read_idx: '{path}' could not be decompressed ({e})") from e


def read_idx(path: str | os.PathLike[str]) -> numpy.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian array of the stored shape and dtype.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an IDX file, an unknown type byte, or fewer/more bytes than the header promises.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_idx: no file at '{path}'")
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"read_idx: '{path}' is not an IDX file (it does not start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _CODE_TO_DTYPE:
        raise ValueError(f"read_idx: '{path}' has unknown IDX type byte 0x{code:02X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: '{path}' is truncated inside its {ndim}-dimension header")
    shape = tuple(int(s) for s in numpy.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _CODE_TO_DTYPE[code]
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        raise ValueError(
            f"read_idx: '{path}' header says shape {shape} ({expected} bytes of {dtype.newbyteorder('=')}) "
            f"but {got} bytes follow: the file is truncated or corrupt"
        )
    arr = numpy.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def write_idx(path: str | os.PathLike[str], array: numpy.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as IDX; gzipped when ``compress`` is True, or when None and the name ends in ``.gz``."""
    path = Path(path)
    array = numpy.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _DTYPE_TO_CODE:
        raise TypeError(f"write_idx: dtype {array.dtype} has no IDX type code "
                        "(uint8, int8, int16, int32, float32, float64)")
    if array.ndim > 255:
        raise ValueError(f"write_idx: {array.ndim} dimensions; IDX holds at most 255")
    code = _DTYPE_TO_CODE[native]
    body = (bytes([0, 0, code, array.ndim]) + numpy.asarray(array.shape, dtype=">u4").tobytes()
            + array.astype(_CODE_TO_DTYPE[code]).tobytes(order="C"))
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
