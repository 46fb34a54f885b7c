"""Small private ops the recurrent layers need to join directions and layers (kept here so the layers do not
depend on engine ops still landing): concatenation along the last axis, stacking on a new first axis, and the
dropout mask between stacked layers."""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops import mul
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor


class ConcatLastFunction(Function):
    """y = [x_1, ..., x_k] joined along the last axis;  dx_i = the matching slice of gy."""

    def forward(self, *xs: Any) -> Any:
        self.widths = [x.shape[-1] for x in xs]
        return get_array_module(*xs).concatenate(xs, axis=-1)

    def backward(self, gy: Any) -> Any:
        bounds = numpy.cumsum(self.widths)[:-1].tolist()
        return tuple(get_array_module(gy).split(gy, bounds, axis=-1))


class StackFirstFunction(Function):
    """y = x_1, ..., x_k stacked on a new first axis;  dx_i = gy[i]."""

    def forward(self, *xs: Any) -> Any:
        return get_array_module(*xs).stack(xs, axis=0)

    def backward(self, gy: Any) -> Any:
        return tuple(gy[i] for i in range(gy.shape[0]))


def concat_last(xs: list[Tensor]) -> Tensor:
    return xs[0] if len(xs) == 1 else ConcatLastFunction()(*xs)


def stack_first(xs: list[Tensor]) -> Tensor:
    return StackFirstFunction()(*xs)


def dropout_between(x: Tensor, p: float) -> Tensor:
    """Inverted dropout ``y = x * m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` per element (training only)."""
    if p >= 1.0:
        return mul(x, Tensor._from_op(get_array_module(x.data).zeros(x.shape, x.dtype), None, 0))
    keep = get_rng().random(x.shape) >= p
    mask = (keep / (1.0 - p)).astype(x.dtype)
    xp = get_array_module(x.data)
    if xp is not numpy:
        mask = xp.asarray(mask)
    return mul(x, Tensor._from_op(mask, None, 0))
