"""Sorting along one dim: ``sort``, ``argsort``, ``topk``.

``sort`` and ``topk`` return ``(values, indices)``; the values are differentiable: each picked element's
gradient goes back to the position it came from (``dx = zeros; dx[indices] += gy`` along the dim). Ties are
broken stably (the earlier index first, or for descending order as PyTorch's stable descending sort does:
the earlier index first among equals), NaN sorts as the largest value, as in PyTorch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor


class _SortResult(NamedTuple):
    values: Tensor
    indices: Tensor


class TakeAlongDimFunction(Function):
    """y = x taken at integer ``index`` along ``axis`` (index has y's shape);  dx = zeros, gy added back at
    the indices (an index never repeats within one sort/topk slice, so plain assignment suffices)."""

    def __init__(self, index: Any, axis: int) -> None:
        self.index, self.axis = index, axis

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return get_array_module(x).take_along_axis(x, self.index, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        xp.put_along_axis(gx, self.index, gy, axis=self.axis)
        return gx


def _order(x: Tensor, axis: int, descending: bool) -> Any:
    """Stable indices that sort ``x`` along ``axis`` (NaN last ascending, first descending, as PyTorch)."""
    xp = get_array_module(x.array)
    a = x.array
    if x.ndim == 0:
        return xp.zeros((), dtype=xp.int64)
    if descending:
        # stable descending: sort the negated keys ascending; bools/unsigned via a flip of the order key
        if a.dtype.kind == "f":
            key = xp.where(xp.isnan(a), -xp.inf, -a)
        elif a.dtype.kind == "b":
            key = ~a
        else:
            key = -a.astype(xp.int64) if a.dtype.kind == "u" else -a
        return xp.argsort(key, axis=axis, kind="stable")
    return xp.argsort(a, axis=axis, kind="stable")


def _need(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:  # noqa: A002
    """Indices that sort ``input`` along ``dim`` (int64; always stable here, ``stable=`` is accepted)."""
    _need("argsort", input)
    axis = norm_dim("argsort", dim, input.ndim) if input.ndim else 0
    return Tensor._from_op(_order(input, axis, descending), None, 0)


def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> _SortResult:  # noqa: A002
    """``(values, indices)`` of ``input`` sorted along ``dim``; the values carry the gradient."""
    _need("sort", input)
    if input.ndim == 0:
        return _SortResult(input.clone(), Tensor._from_op(get_array_module(input.array).zeros((), "int64"), None, 0))
    axis = norm_dim("sort", dim, input.ndim)
    idx = _order(input, axis, descending)
    return _SortResult(TakeAlongDimFunction(idx, axis)(input), Tensor._from_op(idx, None, 0))


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> _SortResult:  # noqa: A002
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices, largest first (``sorted``
    is accepted; the result is always sorted). The values carry the gradient."""
    _need("topk", input)
    axis = norm_dim("topk", dim, input.ndim) if input.ndim else 0
    n = input.shape[axis] if input.ndim else 1
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"topk: k={k!r} is out of range for dim {dim} of size {n} (shape {input.shape})")
    if input.ndim == 0:
        return sort(input)
    idx = _order(input, axis, descending=largest)
    idx = get_array_module(idx).ascontiguousarray(idx.take(range(k), axis=axis))
    return _SortResult(TakeAlongDimFunction(idx, axis)(input), Tensor._from_op(idx, None, 0))
