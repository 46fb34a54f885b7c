"""Indexing: basic and advanced ``x[index]`` (more as they are added)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


class GetItem(Function):
    """y = x[index];  dx = zeros with gy scattered (added, so repeated indices accumulate) at ``index``."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def forward(self, x: Any) -> Any:
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, self.dtype)
        if _has_integer_array(self.index):
            xp.add.at(gx, self.index, gy)  # repeated indices must accumulate
        else:
            gx[self.index] = gy  # slices, ints and masks never repeat an element
        return gx


def _has_integer_array(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if isinstance(p, list) or (hasattr(p, "dtype") and p.dtype.kind in "iu" and getattr(p, "ndim", 0) > 0):
            return True
    return False


def _unwrap_index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def getitem(x: Tensor, index: Any) -> Tensor:
    idx = _unwrap_index(index)
    try:
        x.data[idx]
    except IndexError as e:
        raise IndexError(f"getitem: index {index!r} is invalid for a tensor of shape {x.shape}: {e}") from None
    return GetItem(idx)(x)
