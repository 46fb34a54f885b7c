"""Element-wise maps y = f(x) with VJP dx = gy * f'(x)."""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.function import Function
from handgrad.engine.ops._util import as_tensor_like, broadcast_error, unbroadcast
from handgrad.engine.tensor import Tensor


class ExpFunction(Function):
    """y = e^x;  dx = gy * y."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * self.y


class LogFunction(Function):
    """y = ln x;  dx = gy / x."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy: Any) -> Any:
        return gy / self.x


class TanhFunction(Function):
    """y = tanh x;  dx = gy * (1 - y^2)."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * (1 - self.y * self.y)


def sigmoid_array(x: Any) -> Any:
    """1 / (1 + e^-x) on an array: PyTorch's own formula, exact to rounding at both tails.

    Far left e^-x is huge and 1 / (1 + e^-x) ~ e^x keeps full relative precision (unlike
    (1 + tanh(x/2)) / 2, which rounds to 0 in float32 below x ~ -18); it is 0 only where e^-x overflows,
    i.e. where the true value is below 2.9e-39 (float32) or 5.6e-309 (float64), exactly where PyTorch's is 0
    too (so BCE's log clamp at -100 then triggers in both). Far right it rounds to 1 like any formula.
    """
    xp = get_array_module(x)
    with numpy.errstate(over="ignore"):  # e^-x = inf gives the right limit 1 / inf = 0
        e = xp.exp(-x)
    if e.ndim == 0:  # a 0-d input gives a NumPy scalar here, which cannot be an ``out=``
        return xp.asarray(1 / (e + 1))
    e += 1
    return xp.divide(1, e, out=e)


class SigmoidFunction(Function):
    """y = 1 / (1 + e^-x) (``sigmoid_array``, exact at both tails);  dx = gy * y (1 - y) (PyTorch's form)."""

    def forward(self, x: Any) -> Any:
        self.y = y = sigmoid_array(x)
        return y

    def backward(self, gy: Any) -> Any:
        return gy * self.y * (1 - self.y)


class ReLUFunction(Function):
    """y = max(x, 0);  dx = gy * [x > 0].

    ``kernel``: the compiled one-pass forward/backward (``handgrad.functional._act_kernels`` registers itself
    here when imported; the engine cannot import it) or None; it returns None where it does not apply."""

    kernel: Any = None

    def forward(self, x: Any) -> Any:
        if self.kernel is not None:
            done = self.kernel.forward(x)
            if done is not None:
                y, self.mask = done
                return y
        self.mask = x > 0
        return get_array_module(x).maximum(x, 0)  # not x * mask: -inf * 0 would be NaN

    def backward(self, gy: Any) -> Any:
        if self.kernel is not None:
            gx = self.kernel.backward(gy, self.mask)
            if gx is not None:
                return gx
        return gy * self.mask


class CastFunction(Function):
    """y = x converted to another dtype;  dx = gy converted back."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    def forward(self, x: Any) -> Any:
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Any) -> Any:
        return gy.astype(self.src)


class CloneFunction(Function):
    def forward(self, x: Any) -> Any:
        return x.copy()

    def backward(self, gy: Any) -> Any:
        return gy


def exp(x: Tensor) -> Tensor:
    return ExpFunction()(x)


def log(x: Tensor) -> Tensor:
    return LogFunction()(x)


def tanh(x: Tensor) -> Tensor:
    return TanhFunction()(x)


def sigmoid(x: Tensor) -> Tensor:
    return SigmoidFunction()(x)


def relu(x: Tensor) -> Tensor:
    return ReLUFunction()(x)


def cast(x: Tensor, dtype: Any) -> Tensor:
    """``x`` in ``dtype`` (any dtype spelling ``to_dtype`` accepts); differentiable into floating dtypes."""
    dt = to_dtype(dtype, "cast")
    if x.dtype == dt:
        return x
    if dt.kind not in "fc":
        return Tensor(x.array.astype(dt))
    return CastFunction(dt)(x)


def clone(x: Tensor) -> Tensor:
    return CloneFunction()(x)


class SqrtFunction(Function):
    """y = sqrt x;  dx = gy / (2 y)."""

    def forward(self, x: Any) -> Any:
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy / (2 * self.y)


class AbsFunction(Function):
    """y = |x|;  dx = gy * sign(x) (0 at x == 0, like PyTorch)."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, gy: Any) -> Any:
        return gy * get_array_module(gy).sign(self.x)


class SinFunction(Function):
    """y = sin x;  dx = gy * cos x."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).sin(x)

    def backward(self, gy: Any) -> Any:
        return gy * get_array_module(gy).cos(self.x)


class CosFunction(Function):
    """y = cos x;  dx = -gy * sin x."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return get_array_module(x).cos(x)

    def backward(self, gy: Any) -> Any:
        return -gy * get_array_module(gy).sin(self.x)


class ClampFunction(Function):
    """y = min(max(x, lo), hi) for constant bounds (either may be None);
    dx = gy * [lo <= x <= hi] (the gradient passes at the bounds themselves, like PyTorch)."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            self.inside = (x >= lo) & (x <= hi)
            return xp.minimum(xp.maximum(x, lo), hi)  # not xp.clip: hi wins when lo > hi, as in torch
        if lo is not None:
            self.inside = x >= lo
            return xp.maximum(x, lo)
        self.inside = x <= hi
        return xp.minimum(x, hi)

    def backward(self, gy: Any) -> Any:
        return gy * self.inside


class ClampTensorFunction(Function):
    """y = min(max(x, lo), hi) with tensor bounds (broadcast; either may be absent). As in PyTorch:
    dx = gy [lo <= x <= hi], dlo = gy [x < lo and lo < hi], dhi = gy [x > hi or hi < lo]."""

    def __init__(self, has_lo: bool, has_hi: bool) -> None:
        self.has_lo, self.has_hi = has_lo, has_hi

    def forward(self, x: Any, *bounds: Any) -> Any:
        xp = get_array_module(x)
        it = iter(bounds)
        lo = next(it) if self.has_lo else None
        hi = next(it) if self.has_hi else None
        self.shapes = [x.shape] + [b.shape for b in bounds]
        y = x
        if lo is not None:
            y = xp.maximum(y, lo)
        if hi is not None:
            y = xp.minimum(y, hi)
        self.x, self.lo, self.hi = x, lo, hi
        return y

    def backward(self, gy: Any) -> Any:
        x, lo, hi = self.x, self.lo, self.hi
        zero = gy.dtype.type(0)
        xp = get_array_module(gy)
        inside = True
        if lo is not None:
            inside = inside & (x >= lo)
        if hi is not None:
            inside = inside & (x <= hi)
        grads = [unbroadcast(xp.where(inside, gy, zero), x.shape)]
        if lo is not None:
            hit = x < lo if hi is None else (x < lo) & (lo < hi)
            grads.append(unbroadcast(xp.where(hit, gy, zero), lo.shape))
        if hi is not None:
            hit = x > hi if lo is None else (x > hi) | (hi < lo)
            grads.append(unbroadcast(xp.where(hit, gy, zero), hi.shape))
        return tuple(grads)


def _need_tensor(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def sqrt(x: Tensor) -> Tensor:
    _need_tensor("sqrt", x)
    return SqrtFunction()(x)


def abs(x: Tensor) -> Tensor:  # noqa: A001 - torch name
    _need_tensor("abs", x)
    return AbsFunction()(x)


def sin(x: Tensor) -> Tensor:
    _need_tensor("sin", x)
    return SinFunction()(x)


def cos(x: Tensor) -> Tensor:
    _need_tensor("cos", x)
    return CosFunction()(x)


def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch argument names
    """Clip ``x`` to ``[min, max]`` (numbers or broadcastable tensors; one may be None). Where ``min > max``
    the result is ``max``, as in PyTorch. The gradient passes where ``min <= x <= max``."""
    _need_tensor("clamp", x)
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must not be None")
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        return ClampFunction(None if min is None else float(min), None if max is None else float(max))(x)
    bounds = [as_tensor_like(b, x) for b in (min, max) if b is not None]
    for b in bounds:
        if b.dtype != x.dtype:
            raise TypeError(f"clamp: bound dtype {b.dtype} differs from input dtype {x.dtype}")
    try:
        shape = numpy.broadcast_shapes(x.shape, *(b.shape for b in bounds))
    except ValueError:
        raise broadcast_error("clamp", x, bounds[0]) from None
    if shape != x.shape:
        raise ValueError(f"clamp: bounds of shapes {[b.shape for b in bounds]} do not broadcast to input {x.shape}")
    return ClampTensorFunction(min is not None, max is not None)(x, *bounds)


clip = clamp
