"""Element-wise maps y = f(x) with VJP dx = gy * f'(x)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


class Exp(Function):
    """y = e^x;  dx = gy * y."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * self.y


class Log(Function):
    """y = ln x;  dx = gy / x."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy: Any) -> Any:
        return gy / self.x


class Tanh(Function):
    """y = tanh x;  dx = gy * (1 - y^2)."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * (1 - self.y * self.y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2 to stay finite;  dx = gy * y (1 - y)."""

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        y = xp.tanh(x * 0.5)
        y += 1
        y *= 0.5
        self.y = y
        return y

    def backward(self, gy: Any) -> Any:
        return gy * self.y * (1 - self.y)


class ReLU(Function):
    """y = max(x, 0);  dx = gy * [x > 0]."""

    def forward(self, x: Any) -> Any:
        self.mask = x > 0
        return x * self.mask

    def backward(self, gy: Any) -> Any:
        return gy * self.mask


class Cast(Function):
    """y = x converted to another dtype;  dx = gy converted back."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    def forward(self, x: Any) -> Any:
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Any) -> Any:
        return gy.astype(self.src)


class Clone(Function):
    def forward(self, x: Any) -> Any:
        return x.copy()

    def backward(self, gy: Any) -> Any:
        return gy


def exp(x: Tensor) -> Tensor:
    return Exp()(x)


def log(x: Tensor) -> Tensor:
    return Log()(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh()(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid()(x)


def relu(x: Tensor) -> Tensor:
    return ReLU()(x)


def cast(x: Tensor, dtype: Any) -> Tensor:
    import numpy

    if x.dtype == numpy.dtype(dtype):
        return x
    if numpy.dtype(dtype).kind not in "fc":
        return Tensor(x.data.astype(dtype))
    return Cast(numpy.dtype(dtype))(x)


def clone(x: Tensor) -> Tensor:
    return Clone()(x)
