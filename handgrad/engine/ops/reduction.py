"""Reductions over axes: sum, mean (more in this file as they are added)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


def normalize_axes(dim: Any, ndim: int, op: str) -> tuple[int, ...] | None:
    """``dim`` (int, tuple or None) as a sorted tuple of non-negative axes; a clear error if out of range."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(d % max(ndim, 1))
    return tuple(sorted(out))


def expand_reduced(g: Any, shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: bool) -> Any:
    """Broadcast a reduced gradient back to ``shape`` (re-inserting the reduced axes if dropped)."""
    xp = get_array_module(g)
    if axes is None:
        axes = tuple(range(len(shape)))
    if not keepdims:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    """y = sum_{axes} x;  dx = gy broadcast back over the summed axes."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        xp = get_array_module(x)
        return xp.asarray(x.sum(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy: Any) -> Any:
        return expand_reduced(gy, self.shape, self.axes, self.keepdims)


class Mean(Function):
    """y = (1/n) sum_{axes} x;  dx = gy / n broadcast back."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        xp = get_array_module(x)
        n = x.size if self.axes is None else int(xp.prod([x.shape[a] for a in self.axes]))
        self.n = max(n, 1)
        return xp.asarray(x.mean(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy: Any) -> Any:
        return expand_reduced(gy / self.n, self.shape, self.axes, self.keepdims)


def sum(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001 - torch name
    return Sum(normalize_axes(dim, x.ndim, "sum"), keepdim)(x)


def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return Mean(normalize_axes(dim, x.ndim, "mean"), keepdim)(x)
