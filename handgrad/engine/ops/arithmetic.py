"""Broadcasting arithmetic: + - * / (also rounded: ``div(rounding_mode=)``, ``//``) ** and negation, each with
its VJP.

For z = f(x, y) under broadcasting, dL/dx = unbroadcast(dL/dz * dz/dx) (sum over broadcast axes).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops._util import broadcast_error, check_same_dtype, pair, unbroadcast
from handgrad.engine.tensor import Tensor


class _BinaryFunction(Function):
    op = "binary"

    def __call__(self, a: Tensor, b: Tensor) -> Any:  # type: ignore[override]
        check_same_dtype(self.op, a, b)
        try:
            return super().__call__(a, b)
        except ValueError as e:
            if "broadcast" in str(e):
                raise broadcast_error(self.op, a, b) from None
            raise


class AddFunction(_BinaryFunction):
    """z = x + y;  dx = gz, dy = gz (unbroadcast)."""

    op = "add"

    def forward(self, x: Any, y: Any) -> Any:
        self.xs, self.ys = x.shape, y.shape
        return x + y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        return (unbroadcast(gz, self.xs) if n[0] else None, unbroadcast(gz, self.ys) if n[1] else None)


class SubFunction(_BinaryFunction):
    """z = x - y;  dx = gz, dy = -gz."""

    op = "sub"

    def forward(self, x: Any, y: Any) -> Any:
        self.xs, self.ys = x.shape, y.shape
        return x - y

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        return (unbroadcast(gz, self.xs) if n[0] else None, unbroadcast(-gz, self.ys) if n[1] else None)


class MulFunction(_BinaryFunction):
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


class DivFunction(_BinaryFunction):
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


class RoundingDivFunction(_BinaryFunction):
    """z = trunc(x / y) (``mode='trunc'``) or floor(x / y) (``'floor'``, Python's ``//``);  dx = dy = 0 (the
    result is piecewise constant: PyTorch's gradient is zero too, not absent). Integer division by zero raises,
    as PyTorch's ZeroDivisionError; a float one gives +-inf or NaN."""

    op = "div"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def forward(self, x: Any, y: Any) -> Any:
        xp = get_array_module(x)
        self.xs, self.ys = x.shape, y.shape
        if x.dtype.kind in "iub" and y.dtype.kind in "iub":
            if bool((y == 0).any()):
                raise ZeroDivisionError(f"div: integer division by zero (rounding_mode={self.mode!r})")
            q = xp.floor_divide(x, y)
            if self.mode == "trunc":  # floor rounds negative quotients down: one up where a remainder was left
                q = q + ((q < 0) & (q * y != x)).astype(q.dtype)
            return q
        with numpy.errstate(divide="ignore", invalid="ignore"):
            if self.mode == "floor":
                return xp.floor_divide(x, y)  # exact (no rounding of x / y first), as PyTorch's div_floor
            return xp.trunc(x / y)

    def backward(self, gz: Any) -> Any:
        xp = get_array_module(gz)
        n = self.needs_input_grad
        return (xp.zeros(self.xs, gz.dtype) if n[0] else None, xp.zeros(self.ys, gz.dtype) if n[1] else None)


class PowFunction(_BinaryFunction):
    """z = x ** y;  dx = gz * y * x^(y-1) (0 where y == 0), dy = gz * z * ln x (0 where x == 0 and y >= 0;
    NaN for x < 0, as in PyTorch: the real power has no derivative in y there)."""

    op = "pow"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        self.z = x**y
        return self.z

    def backward(self, gz: Any) -> Any:
        n = self.needs_input_grad
        x, y = self.x, self.y
        xp = get_array_module(x)
        gx = gy = None
        with numpy.errstate(divide="ignore", invalid="ignore"):
            if n[0]:
                gx = unbroadcast(xp.where(y == 0, 0, gz * y * x ** (y - 1)), x.shape).astype(x.dtype, copy=False)
            if n[1]:
                dz = xp.where((x == 0) & (y >= 0), 0, self.z * xp.log(x))
                gy = unbroadcast(gz * dz, y.shape).astype(y.dtype, copy=False)
        return gx, gy


class PowScalarFunction(Function):
    """z = x ** p for a constant p;  dx = gz * p * x^(p-1) (0 for p == 0, like PyTorch)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def forward(self, x: Any) -> Any:
        self.x = x
        return x**self.p

    def backward(self, gz: Any) -> Any:
        p = self.p
        if p == 2:
            return gz * 2 * self.x
        if p == 0:
            return gz * 0
        if p == 1:
            return gz
        return gz * p * self.x ** (p - 1)


class MaximumFunction(_BinaryFunction):
    """z = max(x, y) element-wise;  the gradient goes to the larger operand, split in half on ties
    (PyTorch's rule): dx = gz * ([x > y] + [x == y] / 2), dy = gz * ([y > x] + [x == y] / 2)."""

    op = "maximum"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        return get_array_module(x).maximum(x, y)

    def backward(self, gz: Any) -> Any:
        return _select_backward(self, gz, self.x > self.y)


class MinimumFunction(_BinaryFunction):
    """z = min(x, y) element-wise;  dx = gz * ([x < y] + [x == y] / 2), dy likewise (ties split in half)."""

    op = "minimum"

    def forward(self, x: Any, y: Any) -> Any:
        self.x, self.y = x, y
        return get_array_module(x).minimum(x, y)

    def backward(self, gz: Any) -> Any:
        return _select_backward(self, gz, self.x < self.y)


def _select_backward(fn: MaximumFunction | MinimumFunction, gz: Any, x_wins: Any) -> tuple[Any, Any]:
    """Route ``gz`` to the winning operand of maximum/minimum; ties give each half."""
    wx = x_wins.astype(gz.dtype)  # weight of x: 1 where it wins, 1/2 on a tie, 0 where it loses
    wx[fn.x == fn.y] = 0.5
    n = fn.needs_input_grad
    gx = unbroadcast(gz * wx, fn.x.shape) if n[0] else None
    gy = unbroadcast(gz * (1 - wx), fn.y.shape) if n[1] else None
    return gx, gy


class NegFunction(Function):
    """z = -x;  dx = -gz."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gz: Any) -> Any:
        return -gz


class AddScalarFunction(Function):
    """z = x + c for a Python number c (also x - c as x + (-c), exact);  dx = gz."""

    def __init__(self, c: float) -> None:
        self.c = c

    def forward(self, x: Any) -> Any:
        return x + self.c

    def backward(self, gz: Any) -> Any:
        return gz


class RSubScalarFunction(Function):
    """z = c - x;  dx = -gz."""

    def __init__(self, c: float) -> None:
        self.c = c

    def forward(self, x: Any) -> Any:
        return self.c - x

    def backward(self, gz: Any) -> Any:
        return -gz


class MulConstantFunction(Function):
    """z = c x;  dx = c gz, for a constant c: a Python number, or a constant array broadcastable to x in
    x's dtype and array module (a dropout mask: ``functional.dropout`` and the recurrent dropouts use this op).
    ``c`` gets no gradient."""

    def __init__(self, c: Any) -> None:
        self.c = c

    def forward(self, x: Any) -> Any:
        return x * self.c

    def backward(self, gz: Any) -> Any:
        return gz * self.c


class DivScalarFunction(Function):
    """z = x / c;  dx = gz / c."""

    def __init__(self, c: float) -> None:
        self.c = c

    def forward(self, x: Any) -> Any:
        return x / self.c

    def backward(self, gz: Any) -> Any:
        return gz / self.c


class RDivScalarFunction(Function):
    """z = c / x;  dx = -gz c / x^2 = -gz z / x."""

    def __init__(self, c: float) -> None:
        self.c = c

    def forward(self, x: Any) -> Any:
        self.x = x
        self.z = self.c / x
        return self.z

    def backward(self, gz: Any) -> Any:
        return -gz * self.z / self.x


# Python numbers take a one-input fast path (no constant tensor, no unbroadcast); NumPy scalars are not
# "weak" under NumPy 2's promotion rules, so they go through ``pair`` and take the tensor's dtype.
_PY_NUMBER = (int, float)


def add(a: Any, b: Any) -> Tensor:
    if type(b) in _PY_NUMBER and isinstance(a, Tensor):
        return AddScalarFunction(b)(a)
    if type(a) in _PY_NUMBER and isinstance(b, Tensor):
        return AddScalarFunction(a)(b)
    return AddFunction()(*pair(a, b))


def sub(a: Any, b: Any) -> Tensor:
    if type(b) in _PY_NUMBER and isinstance(a, Tensor):
        return AddScalarFunction(-b)(a)
    if type(a) in _PY_NUMBER and isinstance(b, Tensor):
        return RSubScalarFunction(a)(b)
    return SubFunction()(*pair(a, b))


def mul(a: Any, b: Any) -> Tensor:
    if type(b) in _PY_NUMBER and isinstance(a, Tensor):
        return MulConstantFunction(b)(a)
    if type(a) in _PY_NUMBER and isinstance(b, Tensor):
        return MulConstantFunction(a)(b)
    return MulFunction()(*pair(a, b))


def div(a: Any, b: Any, *, rounding_mode: str | None = None) -> Tensor:
    """a / b; with ``rounding_mode='trunc'`` or ``'floor'`` the quotient rounded toward zero or down (integer
    tensors stay integer), with a zero gradient, as ``torch.div``."""
    if rounding_mode is not None:
        if rounding_mode not in ("trunc", "floor"):
            raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                             f"{rounding_mode!r}")
        return RoundingDivFunction(rounding_mode)(*pair(a, b))
    if type(b) in _PY_NUMBER and isinstance(a, Tensor):
        return DivScalarFunction(b)(a)
    if type(a) in _PY_NUMBER and isinstance(b, Tensor):
        return RDivScalarFunction(a)(b)
    return DivFunction()(*pair(a, b))


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - mirrors torch.pow
    if isinstance(a, Tensor) and isinstance(b, (int, float)):
        return PowScalarFunction(b)(a)
    return PowFunction()(*pair(a, b))


def neg(a: Tensor) -> Tensor:
    return NegFunction()(a)


def maximum(a: Any, b: Any) -> Tensor:
    """Element-wise maximum of two broadcastable tensors (ties share the gradient equally)."""
    return MaximumFunction()(*pair(a, b))


def minimum(a: Any, b: Any) -> Tensor:
    """Element-wise minimum of two broadcastable tensors (ties share the gradient equally)."""
    return MinimumFunction()(*pair(a, b))


def square(a: Tensor) -> Tensor:
    """a ** 2."""
    return PowScalarFunction(2)(a)
