"""Element-wise loss functions (regression, binary cross-entropy, KL divergence), named and shaped like
``torch.nn.functional``'s; the losses over a class axis (``cross_entropy``, ``nll_loss``) are in
``classification_losses.py``.

Each loss is ONE fused ``Function`` whose backward is written by hand next to its forward (no chain of
primitive ops), so the cost is one pass forward and one pass back whatever the options.

Notation: ``x`` is the input, ``t`` the target, ``w`` an optional weight, ``l_n`` the loss of element
(or sample) ``n``. Reductions: ``'none'`` returns ``l`` itself, ``'sum'`` returns ``sum_n l_n`` and
``'mean'`` returns ``sum_n l_n / D`` where ``D`` is the number of elements unless a loss says otherwise
(class-weighted cross-entropy divides by the sum of the targets' weights, exactly like PyTorch). The
deprecated ``size_average`` / ``reduce`` arguments are accepted where PyTorch accepts them, in the same
positions, and mapped to ``reduction`` the way PyTorch does.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops._util import unbroadcast
from handgrad.engine.ops.unary import sigmoid_array
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, legacy_reduction, reduce_loss, reduce_loss_backward

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "huber_loss", "kl_div", "l1_loss", "mse_loss",
    "smooth_l1_loss",
]

_BCE_EPS = float(numpy.float32(1e-12))  # PyTorch clamps x (1 - x) at the float 1e-12f, also in float64


# -- helpers ----------------------------------------------------------------------------------------------
def _tensor(op: str, name: str, value: Any, like: Tensor | None = None) -> Tensor:
    """``value`` as a Tensor (constants take ``like``'s dtype); a clear error for anything else."""
    if isinstance(value, Tensor):
        return value
    if like is None:
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")
    xp = get_array_module(like.array)
    arr = xp.asarray(value)
    if arr.dtype.kind in "fc" or isinstance(value, float):
        arr = arr.astype(like.dtype)
    return Tensor._from_op(arr, None, 0)


def _check_float(op: str, name: str, t: Tensor) -> None:
    if t.dtype.kind not in "fc":
        raise TypeError(f"{op}: {name} must be a floating tensor, got dtype {t.dtype} (shape {t.shape})")


def _const(value: Any, like: Any) -> Any:
    """An optional weight-like argument as a raw array in ``like``'s array module and dtype (or None)."""
    if value is None:
        return None
    data = value.array if isinstance(value, Tensor) else value
    xp = get_array_module(like)
    return xp.asarray(data, dtype=like.dtype)


def _broadcast_shapes(op: str, x: Tensor, t: Tensor) -> tuple[int, ...]:
    try:
        return tuple(numpy.broadcast_shapes(x.shape, t.shape))
    except ValueError:
        raise ValueError(
            f"{op}: input {x.shape} and target {t.shape} cannot be broadcast together"
        ) from None


# -- element-wise regression losses -----------------------------------------------------------------------
class _PointwiseLossFunction(Function):
    """Base of losses ``l_i = w_i * f(x_i, t_i)`` (x, t broadcast together), reduced.

    Subclasses give ``value(x, t)`` = f and ``derivs(x, t)`` = (df/dx, df/dt). The backward is
    ``dx_i = g_i * w_i * df/dx_i`` with ``g`` the reduction's gradient, summed over broadcast axes.
    ``mean_by_weight`` makes 'mean' divide by ``sum(w)`` instead of the element count (PyTorch does this
    for weighted mse_loss / l1_loss but not for huber_loss).
    """

    mean_by_weight = False

    def __init__(self, reduction: str, weight: Any = None) -> None:
        self.reduction, self.weight = reduction, weight

    def value(self, x: Any, t: Any) -> Any:
        raise NotImplementedError

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _denom(self) -> Any:
        if self.weight is not None and self.mean_by_weight:
            return self.weight.sum()
        return None

    def forward(self, x: Any, t: Any) -> Any:
        self.x, self.t = x, t
        l = self.value(x, t)
        if self.weight is not None:
            l = l * self.weight
        self.lshape = l.shape
        return reduce_loss(l, self.reduction, self._denom())

    def backward(self, gy: Any) -> Any:
        g = reduce_loss_backward(gy, self.lshape, self.reduction, self._denom())
        if self.weight is not None:
            g = g * self.weight
        dx, dt = self.derivs(self.x, self.t)
        gx = unbroadcast(g * dx, self.x.shape) if self.needs_input_grad[0] else None
        gt = unbroadcast(g * dt, self.t.shape) if self.needs_input_grad[1] and dt is not None else None
        return gx, gt


class MSELossFunction(_PointwiseLossFunction):
    """f = (x - t)^2;  df/dx = 2 (x - t), df/dt = -2 (x - t)."""

    mean_by_weight = True

    def value(self, x: Any, t: Any) -> Any:
        d = x - t
        return d * d

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        d = 2 * (x - t)
        return d, -d


class L1LossFunction(_PointwiseLossFunction):
    """f = |x - t|;  df/dx = sign(x - t) (0 at 0, like PyTorch), df/dt = -sign(x - t)."""

    mean_by_weight = True

    def value(self, x: Any, t: Any) -> Any:
        return get_array_module(x).abs(x - t)

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        s = get_array_module(x).sign(x - t)
        return s, -s


class SmoothL1LossFunction(_PointwiseLossFunction):
    """With d = x - t: f = d^2 / (2 beta) if |d| < beta else |d| - beta/2 (beta = 0 is the L1 loss);
    df/dx = d / beta inside, sign(d) outside; df/dt = -df/dx."""

    def __init__(self, reduction: str, beta: float) -> None:
        super().__init__(reduction)
        self.beta = float(beta)

    def value(self, x: Any, t: Any) -> Any:
        xp = get_array_module(x)
        d = x - t
        a = xp.abs(d)
        if self.beta == 0:
            return a
        return xp.where(a < self.beta, 0.5 * d * d / self.beta, a - 0.5 * self.beta)

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        d = x - t
        if self.beta == 0:
            g = xp.sign(d)
        else:
            g = xp.where(xp.abs(d) < self.beta, d / self.beta, xp.sign(d))
        return g, -g


class HuberLossFunction(_PointwiseLossFunction):
    """With d = x - t: f = d^2 / 2 if |d| < delta else delta (|d| - delta/2);
    df/dx = d inside, delta sign(d) outside; df/dt = -df/dx. (Huber = delta * SmoothL1 with beta=delta.)"""

    def __init__(self, reduction: str, delta: float, weight: Any = None) -> None:
        super().__init__(reduction, weight)
        self.delta = float(delta)

    def value(self, x: Any, t: Any) -> Any:
        xp = get_array_module(x)
        d = x - t
        a = xp.abs(d)
        return xp.where(a < self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        d = x - t
        g = xp.where(xp.abs(d) < self.delta, d, self.delta * xp.sign(d))
        return g, -g


class BCELossFunction(_PointwiseLossFunction):
    """f = -(t log x + (1 - t) log(1 - x)), each log clamped at -100 (PyTorch's guard against log 0);
    df/dx = (x - t) / max(x (1 - x), eps); df/dt = log(1 - x) - log(x) (same clamps). eps is PyTorch's
    float 1e-12f (= 9.9999999600e-13) in every dtype, so that float64 gradients agree to the last bit."""

    def _logs(self, x: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        with numpy.errstate(divide="ignore"):
            return xp.maximum(xp.log(x), -100.0), xp.maximum(xp.log1p(-x), -100.0)

    def value(self, x: Any, t: Any) -> Any:
        lx, l1x = self._logs(x)
        return -(t * lx + (1 - t) * l1x)

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        dx = (x - t) / xp.maximum(x * (1 - x), _BCE_EPS)
        lx, l1x = self._logs(x)
        return dx, l1x - lx


class BCEWithLogitsLossFunction(_PointwiseLossFunction):
    """With s(x) = log(1 + e^-x) computed stably as log1p(e^-|x|) + max(-x, 0) and the positive-class
    factor p = 1 + (pos_weight - 1) t (p = 1 without pos_weight):
    f = (1 - t) x + p s(x);  df/dx = p sigmoid(x) - pos_weight t (= sigmoid(x) - t without pos_weight: not
    (1 - t) - sigmoid(-x), which cancels to 0 for x below -37 with t = 0);  df/dt = -x + (pos_weight - 1) s(x)."""

    def __init__(self, reduction: str, weight: Any = None, pos_weight: Any = None) -> None:
        super().__init__(reduction, weight)
        self.pos_weight = pos_weight

    def _softplus_neg(self, x: Any) -> Any:
        xp = get_array_module(x)
        return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)

    def value(self, x: Any, t: Any) -> Any:
        p = 1 if self.pos_weight is None else 1 + (self.pos_weight - 1) * t
        return (1 - t) * x + p * self._softplus_neg(x)

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        sig = sigmoid_array(x)
        if self.pos_weight is None:
            return sig - t, -x + 0 * t
        pt = self.pos_weight * t
        return (pt + 1 - t) * sig - pt, -x + (self.pos_weight - 1) * self._softplus_neg(x)


class KLDivFunction(_PointwiseLossFunction):
    """x = log q (log-probabilities). Plain target t = p: f = p (log p - x), 0 where p = 0;
    df/dx = -p, df/dp = log p + 1 - x. With log_target (t = log p): f = e^t (t - x);
    df/dx = -e^t, df/dt = e^t (t - x + 1). 'batchmean' divides the sum by the batch size x.shape[0]."""

    def __init__(self, reduction: str, log_target: bool) -> None:
        super().__init__(reduction)
        self.log_target = log_target

    def _denom(self) -> Any:
        if self.reduction == "batchmean":
            return self.lshape[0] if len(self.lshape) else 1
        return None

    def value(self, x: Any, t: Any) -> Any:
        xp = get_array_module(x)
        if self.log_target:
            return xp.exp(t) * (t - x)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            # xlogy(t, t) - t x: 0 log 0 counts as 0 (a negative p gives nan, as in PyTorch)
            return xp.where(t == 0, 0, t * xp.log(xp.where(t == 0, 1, t))) - t * x

    def derivs(self, x: Any, t: Any) -> tuple[Any, Any]:
        xp = get_array_module(x)
        if self.log_target:
            e = xp.exp(t)
            return -e, e * (t - x + 1)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            dt = xp.log(xp.where(t > 0, t, 1)) + 1 - x
        return -t + 0 * x, dt

    def forward(self, x: Any, t: Any) -> Any:
        self.x, self.t = x, t
        l = self.value(x, t)
        self.lshape = l.shape
        if self.reduction == "batchmean":
            return reduce_loss(l, "mean", self._denom())
        return reduce_loss(l, self.reduction)

    def backward(self, gy: Any) -> Any:
        red = "mean" if self.reduction == "batchmean" else self.reduction
        g = reduce_loss_backward(gy, self.lshape, red, self._denom())
        dx, dt = self.derivs(self.x, self.t)
        gx = unbroadcast(g * dx, self.x.shape) if self.needs_input_grad[0] else None
        gt = unbroadcast(g * dt, self.t.shape) if self.needs_input_grad[1] else None
        return gx, gt


def _pointwise(
    op: str, fn: _PointwiseLossFunction, input: Any, target: Any, weight: Any = None, weight_same_size: bool = False
) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    _check_float(op, "input", input)
    target = _tensor(op, "target", target, input)
    if target.dtype.kind not in "fc":
        target = Tensor._from_op(target.array.astype(input.dtype), None, 0)
    if target.dtype != input.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and target dtype {target.dtype} differ")
    shape = _broadcast_shapes(op, input, target)
    if weight is not None:
        wshape = tuple(weight.shape)
        if weight_same_size and wshape != input.shape:
            raise ValueError(f"{op}: weight {wshape} must have the same size as input {input.shape}")
        try:
            numpy.broadcast_shapes(wshape, shape)
        except ValueError:
            raise ValueError(f"{op}: weight {wshape} cannot be broadcast to the input {shape}") from None
        fn.weight = _const(weight, input.array)
    return fn(input, target)


def mse_loss(
    input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
    reduction: str = "mean", weight: Tensor | None = None,
) -> Tensor:
    """Mean squared error ``l_i = w_i (x_i - t_i)^2``; weighted 'mean' divides by ``sum(w)`` (as PyTorch).

    ``input`` and ``target`` broadcast together (any shape); ``weight`` must have ``input``'s shape.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction("mse_loss", reduction)
    return _pointwise("mse_loss", MSELossFunction(reduction), input, target, weight, weight_same_size=True)


def l1_loss(
    input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
    reduction: str = "mean", weight: Tensor | None = None,
) -> Tensor:
    """Mean absolute error ``l_i = w_i |x_i - t_i|``; weighted 'mean' divides by ``sum(w)`` (as PyTorch)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction("l1_loss", reduction)
    return _pointwise("l1_loss", L1LossFunction(reduction), input, target, weight, weight_same_size=True)


def smooth_l1_loss(
    input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
    reduction: str = "mean", beta: float = 1.0,
) -> Tensor:
    """``l_i = 0.5 d_i^2 / beta`` if ``|d_i| < beta`` else ``|d_i| - 0.5 beta``, with ``d = x - t``."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction("smooth_l1_loss", reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    return _pointwise("smooth_l1_loss", SmoothL1LossFunction(reduction, beta), input, target)


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0, weight: Tensor | None = None
) -> Tensor:
    """``l_i = w_i * (0.5 d_i^2 if |d_i| < delta else delta (|d_i| - 0.5 delta))``; 'mean' is over elements."""
    check_reduction("huber_loss", reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    return _pointwise("huber_loss", HuberLossFunction(reduction, delta), input, target, weight, weight_same_size=True)


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
    reduce: bool | None = None, reduction: str = "mean",
) -> Tensor:
    """``l_i = -w_i (t_i log x_i + (1 - t_i) log(1 - x_i))`` for probabilities ``x`` in [0, 1].

    ``target`` must have ``input``'s shape; ``weight`` broadcasts to it. Logs are clamped at -100.
    """
    op = "binary_cross_entropy"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(op, reduction)
    if isinstance(input, Tensor) and isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"{op}: target {target.shape} must have the same shape as input {input.shape}")
    if isinstance(input, Tensor):
        x = input.array
        if x.size and (bool((x < 0).any()) or bool((x > 1).any())):
            raise ValueError(f"{op}: input {input.shape} must hold probabilities in [0, 1]")
    return _pointwise(op, BCELossFunction(reduction), input, target, weight)


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
    reduce: bool | None = None, reduction: str = "mean", pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid + binary cross-entropy fused, stable for any logit ``x``:
    ``l_i = w_i [(1 - t_i) x_i + (1 + (pw - 1) t_i) log(1 + e^{-x_i})]`` with ``pw`` = ``pos_weight``
    broadcast along the last (class) axis. ``target`` must have ``input``'s shape.
    """
    op = "binary_cross_entropy_with_logits"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(op, reduction)
    if isinstance(input, Tensor) and isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"{op}: target {target.shape} must have the same shape as input {input.shape}")
    fn = BCEWithLogitsLossFunction(reduction)
    if pos_weight is not None and isinstance(input, Tensor):
        pshape = tuple(pos_weight.shape)
        try:
            numpy.broadcast_shapes(pshape, input.shape)
        except ValueError:
            raise ValueError(f"{op}: pos_weight {pshape} cannot be broadcast to input {input.shape}") from None
        fn.pos_weight = _const(pos_weight, input.array)
    return _pointwise(op, fn, input, target, weight)


def kl_div(
    input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
    reduction: str = "mean", log_target: bool = False,
) -> Tensor:
    """Kullback-Leibler divergence ``KL(p || q)`` with ``input = log q``: ``l_i = p_i (log p_i - x_i)``.

    ``target`` is ``p`` (or ``log p`` with ``log_target=True``). ``reduction='batchmean'`` divides the sum
    by ``input.shape[0]`` and is the mathematically right KL per sample; ``'mean'`` divides by the
    element count (PyTorch's default, kept for compatibility).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction("kl_div", reduction, ("none", "mean", "sum", "batchmean"))
    return _pointwise("kl_div", KLDivFunction(reduction, bool(log_target)), input, target)
