"""Dtype objects with PyTorch's names (``handgrad.float32``, ``handgrad.long``, ...) and the one function that
turns whatever a user passes as a dtype into a NumPy dtype (``to_dtype``).

handgrad's dtypes ARE NumPy dtypes (``handgrad.float32 is numpy.dtype('float32')``): ``t.dtype ==
handgrad.float32`` holds, and every array routine accepts them unchanged. PyTorch's shorthands keep PyTorch's
meaning: ``handgrad.float`` is float32, ``double`` float64, ``long`` int64, ``int`` int32, ``half`` float16;
Python's own ``float``/``int``/``bool`` mean float64/int64/bool, as ``torch.tensor(x, dtype=float)`` does.

Half precision exists as an object but is refused where a tensor would be made: NumPy has no fast float16
arithmetic and handgrad's ops and gradients are checked in float32/float64 only.
"""

from __future__ import annotations

from typing import Any

import numpy

float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
float16 = numpy.dtype("float16")
int64 = numpy.dtype("int64")
int32 = numpy.dtype("int32")
int16 = numpy.dtype("int16")
int8 = numpy.dtype("int8")
uint8 = numpy.dtype("uint8")
bool = numpy.dtype("bool")  # noqa: A001 - torch name
complex64 = numpy.dtype("complex64")
complex128 = numpy.dtype("complex128")

# PyTorch's shorthands
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16
cfloat = complex64
cdouble = complex128

_NAMES = {"float32": float32, "float": float32, "float64": float64, "double": float64, "float16": float16,
          "half": float16, "int64": int64, "long": int64, "int32": int32, "int": int32, "int16": int16,
          "short": int16, "int8": int8, "uint8": uint8, "bool": bool, "complex64": complex64,
          "complex128": complex128, "cfloat": complex64, "cdouble": complex128}
# ``Tensor.type()`` strings (PyTorch's legacy tensor type names)
TYPE_NAMES = {float32: "FloatTensor", float64: "DoubleTensor", float16: "HalfTensor", int64: "LongTensor",
              int32: "IntTensor", int16: "ShortTensor", int8: "CharTensor", uint8: "ByteTensor", bool: "BoolTensor"}
_FROM_TYPE_NAME = {v: k for k, v in TYPE_NAMES.items()}


def to_dtype(dtype: Any, op: str = "dtype") -> numpy.dtype:
    """``dtype`` (a handgrad/NumPy dtype, a NumPy scalar type, Python's float/int/bool, or a name such as
    ``'float32'``, ``'torch.long'``, ``'handgrad.FloatTensor'``) as a NumPy dtype; a one-line error naming
    ``op`` for anything else, and for float16 (unsupported)."""
    if isinstance(dtype, numpy.dtype):
        dt = dtype
    elif isinstance(dtype, str):
        name = dtype.split(".", 1)[1] if dtype.startswith(("torch.", "handgrad.", "numpy.")) else dtype
        dt = _NAMES.get(name) or _FROM_TYPE_NAME.get(name)  # type: ignore[assignment]
        if dt is None:
            raise TypeError(f"{op}: unknown dtype {dtype!r} (expected e.g. handgrad.float32, 'float64', 'long')")
    else:
        try:
            dt = numpy.dtype(dtype)
        except TypeError:
            raise TypeError(f"{op}: {dtype!r} is not a dtype (expected e.g. handgrad.float32)") from None
    if dt == float16:
        raise TypeError(f"{op}: float16 (half) is not supported by handgrad (NumPy has no fast half-precision "
                        "math); use handgrad.float32")
    if dt.kind not in "fiubc":
        raise TypeError(f"{op}: dtype {dt} is not a numeric dtype")
    return dt
