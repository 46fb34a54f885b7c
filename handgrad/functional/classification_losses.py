"""Losses over a class axis, named and shaped like ``torch.nn.functional``'s: ``cross_entropy`` (softmax and
negative log-likelihood fused, class-index or probability targets, class weights, ``ignore_index``, label
smoothing) and ``nll_loss`` (on log-probabilities).

Each is ONE fused ``Function`` with its backward written by hand; conventions (reductions, the deprecated
``size_average`` / ``reduce``) as in ``losses.py``, with 'mean' dividing by the summed weights of the
targets that are not ignored, exactly like PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, legacy_reduction, reduce_loss, reduce_loss_backward
from handgrad.functional.losses import _check_float, _const, _tensor

__all__ = ["cross_entropy", "nll_loss", "sequence_cross_entropy"]


# -- classification losses over a class axis --------------------------------------------------------------
def _class_inputs(
    op: str, input: Any, target: Any, weight: Any, size_average: bool | None, reduce: bool | None, reduction: str
) -> tuple[str, Tensor, Any]:
    """The checks both class losses make: (reduction after the legacy flags, target as a Tensor, the class
    weights as an array or None); ``input`` must be a floating Tensor with a class dimension."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(op, reduction)
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    _check_float(op, "input", input)
    target = _tensor(op, "target", target)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    return reduction, target, _weight_array(op, weight, c, input.array)


def _class_target(op: str, input: Tensor, target: Tensor, ignore_index: int) -> tuple[Any, Any]:
    """Validate class-index targets; return (target with ignored entries set to 0, valid mask)."""
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: class-index target must be an integer tensor, got dtype {target.dtype} (shape {target.shape})"
        )
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    expected = input.shape[1:] if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if input.ndim == 1:
        expected = ()
    if target.shape != expected:
        raise ValueError(
            f"{op}: input {input.shape} expects a target of shape {expected} (class indices) or {input.shape} "
            f"(class probabilities), got {target.shape}"
        )
    xp = get_array_module(input.array)
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    t = target.array
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= c))
    if bool(bad.any()):
        first = int(t[bad].ravel()[0])
        raise IndexError(
            f"{op}: target {target.shape} holds class {first}, out of range for input {input.shape} with {c} "
            f"classes (valid 0..{c - 1} or ignore_index={ignore_index})"
        )
    return xp.where(valid, t, 0), valid


def _weight_array(op: str, weight: Any, c: int, like: Any) -> Any:
    if weight is None:
        return None
    w = _const(weight, like)
    if w.ndim != 1 or w.shape[0] != c:
        raise ValueError(f"{op}: weight must be a 1-d tensor with one entry per class ({c}), got {tuple(w.shape)}")
    return w


def _class_view(a: Any, ndim: int) -> Any:
    """A per-class vector (C,) reshaped to broadcast along axis 1 of an ndim-array (axis 0 if ndim == 1)."""
    if ndim == 1:
        return a
    return a.reshape((1, -1) + (1,) * (ndim - 2))


class CrossEntropyFunction(Function):
    """Softmax + negative log-likelihood fused over the class axis (1, or 0 for a 1-d input).

    Per sample n the loss is ``l_n = -sum_c q_nc log softmax(x_n)_c`` for a target distribution ``q``:

    * class indices: ``q_nc = m_n [(1 - eps) w_{t_n} [c = t_n] + (eps / C) w_c]`` where ``m_n = 0`` for
      ``t_n = ignore_index`` and ``w = 1`` without weight; 'mean' divides by ``sum_n m_n w_{t_n}``;
    * probabilities p (same shape as x): ``q_nc = w_c ((1 - eps) p_nc + eps / C)``; 'mean' divides by
      the number of samples (N times the spatial size), not by the weights (PyTorch's convention).

    Backward: ``dx_nc = g_n (softmax(x_n)_c sum_k q_nk - q_nc)`` (softmax minus target when the q's sum
    to one); for probability targets also ``dp_nc = -g_n (1 - eps) w_c log softmax(x_n)_c``.
    """

    def __init__(self, mode: str, reduction: str, weight: Any, label_smoothing: float,
                 target_idx: Any = None, valid: Any = None) -> None:
        self.mode, self.reduction, self.weight = mode, reduction, weight
        self.eps, self.target_idx, self.valid = label_smoothing, target_idx, valid

    def forward(self, x: Any, *rest: Any) -> Any:
        xp = get_array_module(x)
        ax = 0 if x.ndim == 1 else 1
        c = x.shape[ax]
        m = x.max(axis=ax, keepdims=True)
        z = x - m
        e = xp.exp(z)
        se = e.sum(axis=ax, keepdims=True)
        logp = z - xp.log(se)
        self.softmax = e / se
        w = self.weight
        wc = None if w is None else _class_view(w, x.ndim)
        if self.mode == "index":
            t = xp.expand_dims(self.target_idx, ax)
            valid = self.valid.astype(x.dtype)
            wt = valid if w is None else w[self.target_idx] * valid
            self.denom = wt.sum()
            if not self.eps:
                # q is one-hot times wt: gather the target log-probability instead of a dense (N, C) q
                # (a 3,000-word softmax); every other term of the dense sum is an exact zero, so the
                # numbers are the same bits
                self.t, self.wt = t, xp.expand_dims(wt, ax)
                l = -(wt * xp.take_along_axis(logp, t, axis=ax).squeeze(ax))
                self.lshape, self.ax = l.shape, ax
                return reduce_loss(l, self.reduction, self.denom)
            q = xp.zeros_like(x)
            xp.put_along_axis(q, t, xp.expand_dims((1 - self.eps) * wt, ax), axis=ax)
            q += (self.eps / c) * (1 if wc is None else wc) * xp.expand_dims(valid, ax)
        else:
            p = rest[0]
            self.logp = logp
            q = (1 - self.eps) * p + self.eps / c
            if wc is not None:
                q = q * wc
            self.denom = x.size // c if x.size else 0
        self.q = q
        l = -(q * logp).sum(axis=ax)
        self.lshape, self.ax = l.shape, ax
        if self.reduction == "mean" and self.mode == "prob" and x.size == 0:
            return xp.asarray(xp.nan, dtype=x.dtype)
        return reduce_loss(l, self.reduction, self.denom)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        g = xp.expand_dims(reduce_loss_backward(gy, self.lshape, self.reduction, self.denom), self.ax)
        if self.mode == "index" and not self.eps:
            # softmax * sum(q) - q with q = wt at the target: softmax * wt, minus wt at the target
            d = self.softmax * self.wt
            at_t = xp.take_along_axis(d, self.t, axis=self.ax)
            xp.put_along_axis(d, self.t, at_t - self.wt, axis=self.ax)
            return g * d
        gx = None
        if self.needs_input_grad[0]:
            gx = g * (self.softmax * self.q.sum(axis=self.ax, keepdims=True) - self.q)
        if self.mode == "index":
            return gx
        gp = None
        if self.needs_input_grad[1]:
            gp = -g * (1 - self.eps) * self.logp
            if self.weight is not None:
                gp = gp * _class_view(self.weight, self.logp.ndim)
        return gx, gp


def cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
    ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean", label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between the softmax of logits ``input`` and ``target``, as ``torch.nn.functional``.

    Shapes: ``input`` (N, C), (N, C, d1, ...) or (C,). ``target`` is either class indices (N,),
    (N, d1, ...) or () of an integer dtype, where ``ignore_index`` entries contribute nothing, or class
    probabilities of ``input``'s shape. ``weight`` (C,) rescales each class; ``label_smoothing`` eps mixes
    the target with the uniform distribution. See ``CrossEntropyFunction`` for the exact math and the 'mean'
    denominators (PyTorch's, including ``nan`` when every target is ignored).
    """
    op = "cross_entropy"
    reduction, target, w = _class_inputs(op, input, target, weight, size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if target.shape == input.shape and target.dtype.kind in "fc":
        if target.dtype != input.dtype:
            raise TypeError(f"{op}: probability target dtype {target.dtype} differs from input dtype {input.dtype}")
        return CrossEntropyFunction("prob", reduction, w, float(label_smoothing))(input, target)
    t, valid = _class_target(op, input, target, ignore_index)
    return CrossEntropyFunction("index", reduction, w, float(label_smoothing), t, valid)(input)


class NLLLossFunction(Function):
    """Negative log-likelihood of log-probabilities ``x``: ``l_n = -m_n w_{t_n} x_{n, t_n}`` with ``m_n = 0``
    for ignored targets; 'mean' divides by ``sum_n m_n w_{t_n}``.  Backward: ``dx_{n, t_n} = -g_n m_n w_{t_n}``,
    zero elsewhere."""

    def __init__(self, reduction: str, weight: Any, target_idx: Any, valid: Any) -> None:
        self.reduction, self.weight, self.target_idx, self.valid = reduction, weight, target_idx, valid

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.ax = 0 if x.ndim == 1 else 1
        self.xshape, self.dtype = x.shape, x.dtype
        valid = self.valid.astype(x.dtype)
        self.wt = valid if self.weight is None else self.weight[self.target_idx] * valid
        self.t = xp.expand_dims(self.target_idx, self.ax)
        picked = xp.take_along_axis(x, self.t, axis=self.ax).squeeze(self.ax)
        l = -self.wt * picked
        self.lshape = l.shape
        return reduce_loss(l, self.reduction, self.wt.sum())

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        g = reduce_loss_backward(gy, self.lshape, self.reduction, self.wt.sum())
        gx = xp.zeros(self.xshape, self.dtype)
        xp.put_along_axis(gx, self.t, xp.expand_dims(-g * self.wt, self.ax), axis=self.ax)
        return gx


def nll_loss(
    input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
    ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood loss on log-probabilities ``input`` (N, C), (N, C, d1, ...) or (C,) with
    class-index ``target`` (N,), (N, d1, ...) or (); see ``NLLLossFunction`` for the math."""
    op = "nll_loss"
    reduction, target, w = _class_inputs(op, input, target, weight, size_average, reduce, reduction)
    t, valid = _class_target(op, input, target, ignore_index)
    return NLLLossFunction(reduction, w, t, valid)(input)


def sequence_cross_entropy(logits: Tensor, targets: Any, ignore_index: int = -100, *,
                           op: str = "sequence_cross_entropy") -> Tensor:
    """Mean cross-entropy over the steps of a batch of sequences whose target is not ``ignore_index``:
    logits (B, T, V), targets (B, T) ids. It is ``cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
    ignore_index=ignore_index)`` with the shapes and ids checked under the caller's name ``op`` (the seq2seq
    loss ignores ``<pad>``, the tagger its unlabelled steps). Every target ignored gives ``nan``, as in PyTorch.
    """
    t = targets.array if isinstance(targets, Tensor) else numpy.asarray(targets)
    if logits.ndim != 3 or tuple(logits.shape[:2]) != tuple(t.shape):
        raise ValueError(f"{op}: logits {logits.shape} do not match targets {tuple(t.shape)} "
                         "(expected (B, T, V) and (B, T))")
    V = logits.shape[2]
    t = t.reshape(-1).astype(numpy.int64)
    ids = t if 0 <= ignore_index < V else t[t != ignore_index]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"{op}: target ids must be in [0, {V}), got [{ids.min()}, {ids.max()}]")
    return cross_entropy(logits.reshape(-1, V), Tensor(t).to(logits.device), ignore_index=ignore_index)
