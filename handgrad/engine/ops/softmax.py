"""softmax and log_softmax along one dim, each a single Function (stable: the max is subtracted first)."""

from __future__ import annotations

import warnings
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor


class SoftmaxFunction(Function):
    """y = e^{x - m} / sum_axis e^{x - m} (m = max over the axis);  dx = y (gy - sum_axis(gy y))."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        e /= e.sum(axis=self.axis, keepdims=True)
        self.y = e
        return e

    def backward(self, gy: Any) -> Any:
        y = self.y
        gyy = gy * y
        gyy -= y * gyy.sum(axis=self.axis, keepdims=True)
        return gyy


class LogSoftmaxFunction(Function):
    """y = x - m - ln sum_axis e^{x - m};  dx = gy - softmax(x) sum_axis gy."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        z = x - x.max(axis=self.axis, keepdims=True)
        z -= xp.log(xp.exp(z).sum(axis=self.axis, keepdims=True))
        self.y = z
        return z

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def _softmax_dim(op: str, x: Tensor, dim: int | None, dtype: Any) -> tuple[Tensor, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if dtype is not None:
        x = x.to(dtype)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating tensor, got dtype {x.dtype}")
    if dim is None:  # PyTorch's legacy implicit choice, with its warning
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the call to include dim=X "
                      "as an argument.", stacklevel=3)
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return x, norm_dim(op, dim, x.ndim)


def softmax(x: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """exp(x) / sum exp(x) along ``dim``, computed stably."""
    x, d = _softmax_dim("softmax", x, dim, dtype)
    if x.ndim == 0:
        return SoftmaxFunction(0)(x.reshape(1)).reshape(())
    return SoftmaxFunction(d)(x)


def log_softmax(x: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """x - logsumexp(x) along ``dim``, computed stably."""
    x, d = _softmax_dim("log_softmax", x, dim, dtype)
    if x.ndim == 0:
        return LogSoftmaxFunction(0)(x.reshape(1)).reshape(())
    return LogSoftmaxFunction(d)(x)


