"""Ops that move data without changing values: reshape, transpose (more as they are added)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


class Reshape(Function):
    """y = x viewed with a new shape;  dx = gy reshaped back."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, x: Any) -> Any:
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy: Any) -> Any:
        return gy.reshape(self.in_shape)


class Permute(Function):
    """y = x with axes reordered by ``perm``;  dx = gy with the inverse permutation."""

    def __init__(self, perm: tuple[int, ...]) -> None:
        self.perm = perm

    def forward(self, x: Any) -> Any:
        return x.transpose(self.perm)

    def backward(self, gy: Any) -> Any:
        inv = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inv[p] = i
        return gy.transpose(inv)


def _shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def resolve_shape(shape: tuple[int, ...], numel: int, op: str, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Fill in one ``-1`` and check the element count."""
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be -1, got {shape}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise ValueError(f"{op}: cannot reshape a tensor of shape {in_shape} ({numel} elements) to {shape}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise ValueError(f"{op}: cannot reshape a tensor of shape {in_shape} ({numel} elements) to {shape}")
    return shape


def reshape(x: Tensor, *shape: Any) -> Tensor:
    return Reshape(resolve_shape(_shape_arg(shape), x.numel(), "reshape", x.shape))(x)


def permute(x: Tensor, *dims: Any) -> Tensor:
    perm = tuple(d % x.ndim for d in _shape_arg(dims))
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"permute: {perm} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Permute(perm)(x)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    perm = list(range(x.ndim))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return Permute(tuple(perm))(x)
