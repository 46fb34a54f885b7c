"""Running sums and products along one dim: ``cumsum``, ``cumprod``."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor


def _reverse_cumsum(xp: Any, a: Any, axis: int) -> Any:
    """sum_{j >= i} a_j along ``axis``."""
    return xp.flip(xp.cumsum(xp.flip(a, axis=axis), axis=axis), axis=axis)


class CumsumFunction(Function):
    """y_i = sum_{j <= i} x_j along ``axis``;  dx_i = sum_{j >= i} gy_j (a reversed running sum)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        return get_array_module(x).cumsum(x, axis=self.axis)

    def backward(self, gy: Any) -> Any:
        return _reverse_cumsum(get_array_module(gy), gy, self.axis)


class CumprodFunction(Function):
    """y_i = prod_{j <= i} x_j along ``axis``;  dx_i = sum_{j >= i} gy_j prod_{k <= j, k != i} x_k.

    Without zeros in a slice that is ``sum_{j >= i} gy_j y_j / x_i``. Slices with a zero take the exact form
    (as PyTorch does): ``dx_i = P_i sum_{j >= i} gy_j Q_ij`` with ``P_i = prod_{k < i} x_k`` and
    ``Q_ij = prod_{i < k <= j} x_k``, built as an (n, n) running product per slice.
    """

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        self.x = x
        self.y = get_array_module(x).cumprod(x, axis=self.axis)
        return self.y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, y, ax = self.x, self.y, self.axis
        has_zero = (x == 0).any(axis=ax, keepdims=True)
        with_zero = bool(has_zero.any())
        safe = xp.where(x == 0, 1, x) if with_zero else x
        gx = _reverse_cumsum(xp, gy * y, ax) / safe
        if not with_zero:
            return gx
        # exact form on the last axis: (..., n) -> (..., n, n)
        xm, gm = xp.moveaxis(x, ax, -1), xp.moveaxis(gy, ax, -1)
        n = xm.shape[-1]
        tri = xp.triu(xp.ones((n, n), dtype=bool), 1)  # [i, k]: k > i
        a = xp.where(tri, xm[..., None, :], 1)
        q = xp.cumprod(a, axis=-1)  # q[i, j] = prod_{i < k <= j} x_k for j >= i
        q = xp.where(xp.tril(xp.ones((n, n), dtype=bool)).T, q, 0)  # j >= i only
        p = xp.cumprod(xp.concatenate([xp.ones_like(xm[..., :1]), xm[..., :-1]], axis=-1), axis=-1)
        exact = p * (q * gm[..., None, :]).sum(axis=-1)
        return xp.where(has_zero, xp.moveaxis(exact, -1, ax), gx)


def _scan(op: str, cls: type, input: Tensor, dim: int, dtype: Any) -> Tensor:  # noqa: A002
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(input).__name__}")
    x = input if dtype is None else input.to(to_dtype(dtype, op))
    if x.ndim == 0:
        return cls(0)(x.reshape(1)).reshape(())
    axis = norm_dim(op, dim, x.ndim)
    if x.dtype.kind in "bi" and dtype is None:  # PyTorch accumulates integers and bools in int64
        x = x.to(to_dtype("int64"))
    return cls(axis)(x)


def cumsum(input: Tensor, dim: int, dtype: Any = None) -> Tensor:  # noqa: A002 - torch argument name
    """Running sum along ``dim``."""
    return _scan("cumsum", CumsumFunction, input, dim, dtype)


def cumprod(input: Tensor, dim: int, dtype: Any = None) -> Tensor:  # noqa: A002
    """Running product along ``dim`` (gradient exact with zeros present)."""
    return _scan("cumprod", CumprodFunction, input, dim, dtype)
