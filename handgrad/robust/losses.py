"""Robust regression losses: the DeepGUM M-theta loss and Tukey's biweight (Huber is ``F.huber_loss``).

With residuals delta = y - phi(x):

* ``gum_loss``: sum_i r_i ||delta_i||^2 with fixed inlier responsibilities r_i from the GUM's E-step (the deck's
  L_GUM); gradient d/dphi_i = -2 r_i delta_i, so an outlier (r_i ~ 0) stops pulling the network.
* ``tukey_biweight_loss`` (Belagiannis et al. 2015): with u = delta / scale,
  rho_c(u) = c^2/6 (1 - (1 - (u/c)^2)^3) for |u| <= c and c^2/6 beyond; psi = rho' = u (1 - (u/c)^2)^2 inside, 0
  outside, so residuals beyond c * scale give no gradient at all. c = 4.685 gives 95% efficiency under Gaussian
  noise; ``scale`` is usually the median absolute deviation of the residuals (:func:`mad_scale`).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, reduce_loss, reduce_loss_backward


def _check_io(op: str, input: Any, target: Any, reduction: str) -> None:
    for name, t in (("input", input), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be floating, got dtype {t.dtype}")
    if input.shape != target.shape:
        raise ValueError(f"{op}: input {input.shape} and target {target.shape} must have the same shape")
    if input.ndim not in (1, 2) or input.shape[0] == 0:
        raise ValueError(f"{op}: expected (N,) or (N, M) predictions with N >= 1, got {input.shape}")
    check_reduction(op, reduction)


class GUMLossFunction(Function):
    """L_i = r_i ||y_i - phi_i||^2 (per sample, summed over the M outputs), reduced;  dphi_i = -2 r_i delta_i."""

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction

    def forward(self, phi: Any, y: Any, r: Any) -> Any:
        delta = y - phi
        sq = delta * delta
        per = r * (sq if sq.ndim == 1 else sq.sum(1))
        self.delta, self.r = delta, r
        return reduce_loss(per, self.reduction)

    def backward(self, g: Any) -> Any:
        w = reduce_loss_backward(g, self.r.shape, self.reduction) * self.r  # (N,)
        if self.delta.ndim == 2:
            w = w[:, None]
        gphi = -2 * w * self.delta
        return (gphi if self.needs_input_grad[0] else None, -gphi if self.needs_input_grad[1] else None, None)


def gum_loss(input: Tensor, target: Tensor, r: Any, reduction: str = "mean") -> Tensor:
    """sum_i r_i ||target_i - input_i||^2 ('sum'), divided by N for 'mean', or per sample (N,) for 'none'.

    input, target: (N,) or (N, M); r: (N,) inlier responsibilities in [0, 1] (treated as constants).
    """
    op = "gum_loss"
    _check_io(op, input, target, reduction)
    xp = get_array_module(input.array)
    rr = r.array if isinstance(r, Tensor) else xp.asarray(r)
    if rr.shape != (input.shape[0],):
        raise ValueError(f"{op}: r must be ({input.shape[0]},) (one weight per sample), got {tuple(rr.shape)}")
    if rr.size and (bool((rr < 0).any()) or bool((rr > 1).any()) or not bool(xp.isfinite(rr).all())):
        raise ValueError(f"{op}: r holds responsibilities, which must lie in [0, 1]")
    return GUMLossFunction(reduction)(input, target, Tensor._from_op(rr.astype(input.dtype), None, 0))


class TukeyBiweightFunction(Function):
    """Element-wise rho_c((y - phi) / s), reduced; d/dphi = -psi(u) / s, psi(u) = u (1 - (u/c)^2)^2 [|u| <= c]."""

    def __init__(self, c: float, scale: float, reduction: str) -> None:
        self.c, self.s, self.reduction = float(c), float(scale), reduction

    def forward(self, phi: Any, y: Any) -> Any:
        xp = get_array_module(phi)
        u = (y - phi) / self.s
        c = self.c
        inside = xp.abs(u) <= c
        t = 1 - (u / c) ** 2
        loss = xp.where(inside, c * c / 6 * (1 - t**3), c * c / 6)
        self.u, self.t, self.inside = u, t, inside
        return reduce_loss(loss, self.reduction)

    def backward(self, g: Any) -> Any:
        xp = get_array_module(g)
        g = reduce_loss_backward(g, self.u.shape, self.reduction)
        psi = xp.where(self.inside, self.u * self.t * self.t, 0)
        gphi = -g * psi / self.s
        return (gphi if self.needs_input_grad[0] else None, -gphi if self.needs_input_grad[1] else None)


def tukey_biweight_loss(
    input: Tensor, target: Tensor, c: float = 4.685, scale: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Tukey's biweight rho_c((target - input) / scale) per element, reduced ('mean' is over elements)."""
    op = "tukey_biweight_loss"
    _check_io(op, input, target, reduction)
    if not c > 0:
        raise ValueError(f"{op}: c must be > 0, got {c}")
    if not scale > 0:
        raise ValueError(f"{op}: scale must be > 0, got {scale}")
    return TukeyBiweightFunction(c, scale, reduction)(input, target)


def mad_scale(residuals: Any, floor: float = 1e-6) -> float:
    """1.4826 * median |delta - median(delta)|: a robust standard deviation (consistent under Gaussian noise)."""
    d = residuals.numpy() if isinstance(residuals, Tensor) else numpy.asarray(residuals)
    d = d.reshape(-1).astype(numpy.float64)
    if d.size == 0:
        raise ValueError("mad_scale: no residuals")
    return max(float(1.4826 * numpy.median(numpy.abs(d - numpy.median(d)))), floor)


__all__ = ["gum_loss", "mad_scale", "tukey_biweight_loss"]
