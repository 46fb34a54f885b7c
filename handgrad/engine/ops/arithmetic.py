"""Broadcasting arithmetic: + - * / ** and negation, each with its VJP.

For z = f(x, y) under broadcasting, dL/dx = unbroadcast(dL/dz * dz/dx) (sum over broadcast axes).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.function import Function
from handgrad.engine.ops._util import broadcast_error, check_same_dtype, pair, unbroadcast
from handgrad.engine.tensor import Tensor


class _Binary(Function):
    op = "binary"

    def __call__(self, a: Tensor, b: Tensor) -> Any:  # type: ignore[override]
        check_same_dtype(self.op, a, b)
        try:
            return super().__call__(a, b)
        except ValueError as e:
            if "broadcast" in str(e):
                raise broadcast_error(self.op, a, b) from None
            raise


class Add(_Binary):
    """z = x + y;  dx = gz, dy = gz (unbroadcast)."""

    op = "add"

    def forward(self, x: Any, y: Any) -> Any:
        self.xs, self.ys = x.shape, y.shape
        return x + y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        return (unbroadcast(gz, self.xs) if n[0] else None, unbroadcast(gz, self.ys) if n[1] else None)


class Sub(_Binary):
    """z = x - y;  dx = gz, dy = -gz."""

    op = "sub"

    def forward(self, x: Any, y: Any) -> Any:
        self.xs, self.ys = x.shape, y.shape
        return x - y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        return (unbroadcast(gz, self.xs) if n[0] else None, unbroadcast(-gz, self.ys) if n[1] else None)


class Mul(_Binary):
    """z = x * y;  dx = gz * y, dy = gz * x."""

    op = "mul"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        return x * y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        return (
            unbroadcast(gz * self.y, self.x.shape) if n[0] else None,
            unbroadcast(gz * self.x, self.y.shape) if n[1] else None,
        )


class Div(_Binary):
    """z = x / y;  dx = gz / y, dy = -gz * x / y^2."""

    op = "div"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        return x / y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        gx = gz / self.y
        return (
            unbroadcast(gx, self.x.shape) if n[0] else None,
            unbroadcast(-gx * self.x / self.y, self.y.shape) if n[1] else None,
        )


class Pow(_Binary):
    """z = x ** y;  dx = gz * y * x^(y-1), dy = gz * z * log(x) (taken as 0 where x == 0)."""

    op = "pow"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        self.z = x**y
        return self.z

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        x, y = self.x, self.y
        gx = gy = None
        if n[0]:
            gx = unbroadcast(gz * y * x ** (y - 1), x.shape)
        if n[1]:
            from handgrad.engine.backend import get_array_module

            xp = get_array_module(x)
            safe = xp.where(x > 0, x, 1)
            gy = unbroadcast(gz * self.z * xp.log(safe), y.shape)
        return gx, gy


class PowScalar(Function):
    """z = x ** p for a constant p;  dx = gz * p * x^(p-1)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def forward(self, x: Any) -> Any:
        self.x = x
        return x**self.p

    def backward(self, gz: Any) -> Any:
        p = self.p
        if p == 2:
            return gz * 2 * self.x
        return gz * p * self.x ** (p - 1)


class Neg(Function):
    """z = -x;  dx = -gz."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gz: Any) -> Any:
        return -gz


def add(a: Any, b: Any) -> Tensor:
    return Add()(*pair(a, b))


def sub(a: Any, b: Any) -> Tensor:
    return Sub()(*pair(a, b))


def mul(a: Any, b: Any) -> Tensor:
    return Mul()(*pair(a, b))


def div(a: Any, b: Any) -> Tensor:
    return Div()(*pair(a, b))


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - mirrors torch.pow
    if isinstance(a, Tensor) and isinstance(b, (int, float)):
        return PowScalar(b)(a)
    return Pow()(*pair(a, b))


def neg(a: Tensor) -> Tensor:
    return Neg()(a)
