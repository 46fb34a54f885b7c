"""The one door to the array module.

Every op asks ``get_array_module(*arrays)`` for ``xp`` instead of importing NumPy directly, so a CuPy
backend can replace NumPy without touching op code (the same idea as Chainer's ``backend.get_array_module``).
"""

from __future__ import annotations

import types
from typing import Any

import numpy

try:  # CuPy is optional: only imported if the user has it.
    import cupy as _cupy  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - no GPU stack in CI
    _cupy = None

_default_dtype = numpy.dtype(numpy.float32)


def get_array_module(*arrays: Any) -> types.ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return numpy


def get_default_dtype() -> numpy.dtype:
    """The floating dtype new tensors get when none is named (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype: Any) -> None:
    """Set the floating dtype for new tensors: ``float32`` or ``float64``."""
    global _default_dtype
    d = numpy.dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {d}")
    _default_dtype = d


def is_floating(dtype: Any) -> bool:
    return numpy.dtype(dtype).kind == "f"
