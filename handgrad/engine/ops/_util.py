"""Helpers shared by the ops: broadcasting gradients back and lifting constants to tensors."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor


def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` down to ``shape``: the VJP of NumPy broadcasting (sum over added and stretched axes)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def as_tensor_like(value: Any, like: Tensor) -> Tensor:
    """A constant ``value`` as a tensor in ``like``'s array module and (floating) dtype."""
    if isinstance(value, Tensor):
        return value
    xp = get_array_module(like.array)
    dtype = like.dtype if like.dtype.kind in "fc" or not isinstance(value, float) else None
    return Tensor._from_op(xp.asarray(value, dtype=dtype), None, 0)


def pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands of a binary op as tensors, constants taking the tensor operand's dtype."""
    if isinstance(a, Tensor):
        return a, as_tensor_like(b, a)
    if isinstance(b, Tensor):
        return as_tensor_like(a, b), b
    raise TypeError("expected at least one Tensor operand")


def check_same_dtype(op: str, a: Tensor, b: Tensor) -> None:
    if a.dtype != b.dtype and a.dtype.kind in "fc" and b.dtype.kind in "fc":
        raise TypeError(f"{op}: operands have different dtypes {a.dtype} and {b.dtype}; cast one with .to()")


def broadcast_error(op: str, a: Tensor, b: Tensor) -> ValueError:
    return ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together")
