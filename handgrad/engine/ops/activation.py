"""Activation functions beyond relu/sigmoid/tanh (those live in ``unary``): leaky ReLU, ELU, GELU (exact
and tanh approximation), softplus, log-sigmoid, SiLU. Each is one ``Function`` with its derivative written out."""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module, get_special_module
from handgrad.engine.function import Function
from handgrad.engine.ops.unary import sigmoid_array
from handgrad.engine.tensor import Tensor


def erf(x: Any) -> Any:
    """The error function on whichever array module holds ``x`` (SciPy for NumPy, cupyx for CuPy)."""
    return get_special_module(get_array_module(x)).erf(x)




class LeakyReLUFunction(Function):
    """y = x if x > 0 else a x;  dx = gy if x > 0 else a gy (x == 0 takes the slope a, like PyTorch)."""

    def __init__(self, negative_slope: float) -> None:
        self.a = negative_slope

    def forward(self, x: Any) -> Any:
        self.pos = x > 0
        return get_array_module(x).where(self.pos, x, x * self.a)

    def backward(self, gy: Any) -> Any:
        return get_array_module(gy).where(self.pos, gy, gy * self.a)


class ELUFunction(Function):
    """y = x if x > 0 else alpha (e^x - 1);  dx = gy if x > 0 else gy * alpha e^x.

    The backward takes e^x afresh (as PyTorch does) rather than y + alpha: alpha (e^x - 1) + alpha rounds
    to 0 below x ~ -17 (float32) or -37 (float64) where e^x is still representable."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.pos = x > 0
        # expm1 only of the non-positive part: no overflow for large x, full precision near 0
        self.xneg = xp.minimum(x, 0)
        return xp.where(self.pos, x, self.alpha * xp.expm1(self.xneg))

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        return xp.where(self.pos, gy, gy * (self.alpha * xp.exp(self.xneg)))


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


class GELUFunction(Function):
    """Exact: y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;  dx = gy (Phi(x) + x phi(x)),
    phi(x) = e^{-x^2/2} / sqrt(2 pi).

    approximate='tanh': y = x (1 + tanh u) / 2, u = sqrt(2/pi) (x + 0.044715 x^3);
    dx = gy [(1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2], t = tanh u.
    """

    def __init__(self, approximate: str) -> None:
        self.approximate = approximate

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.x = x
        if self.approximate == "tanh":
            self.t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
        return x * self.cdf

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x = self.x
        if self.approximate == "tanh":
            t = self.t
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
            return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        return gy * (self.cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x)))


class SoftplusFunction(Function):
    """y = (1/beta) ln(1 + e^{beta x}), or x where beta x > threshold (PyTorch's linear cut-off);
    dx = gy sigmoid(beta x), or gy past the threshold. Computed as max(z, 0) + log1p(e^{-|z|}) so large
    thresholds cannot overflow."""

    def __init__(self, beta: float, threshold: float) -> None:
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        z = x * self.beta
        self.z = z
        self.linear = z > self.threshold
        soft = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / self.beta
        return xp.where(self.linear, x, soft)

    def backward(self, gy: Any) -> Any:
        return get_array_module(gy).where(self.linear, gy, gy * sigmoid_array(self.z))


class LogSigmoidFunction(Function):
    """y = ln sigmoid(x) = min(x, 0) - ln(1 + e^{-|x|});  dx = gy sigmoid(-x).

    Never ln of a rounded sigmoid: that is -inf in float32 below x ~ -104 and loses all digits near 0
    from above; this form is exact at both tails (y ~ x far left, y ~ -e^-x far right), as PyTorch's."""

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.x = x
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, gy: Any) -> Any:
        return gy * sigmoid_array(-self.x)


class SiLUFunction(Function):
    """y = x sigmoid(x) (swish);  dx = gy s (1 + x (1 - s)), s = sigmoid(x)."""

    def forward(self, x: Any) -> Any:
        self.x = x
        self.s = sigmoid_array(x)
        return x * self.s

    def backward(self, gy: Any) -> Any:
        s = self.s
        return gy * (s * (1 + self.x * (1 - s)))


def _need_float(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating tensor, got dtype {x.dtype}")


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    _need_float("leaky_relu", x)
    return LeakyReLUFunction(float(negative_slope))(x)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    _need_float("elu", x)
    return ELUFunction(float(alpha))(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    _need_float("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELUFunction(approximate)(x)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    _need_float("softplus", x)
    if beta == 0:
        raise ValueError("softplus: beta must be non-zero")
    return SoftplusFunction(float(beta), float(threshold))(x)


def logsigmoid(x: Tensor) -> Tensor:
    _need_float("logsigmoid", x)
    return LogSigmoidFunction()(x)


def silu(x: Tensor) -> Tensor:
    _need_float("silu", x)
    return SiLUFunction()(x)
