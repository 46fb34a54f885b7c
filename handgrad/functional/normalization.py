"""Batch, layer and group normalisation as fused ops: one Function each, backward in closed form.

All three standardise x over a set of axes R (n elements per statistic) and then apply a per-channel
(or per-feature) affine map:

    mu = mean_R x,   var = mean_R (x - mu)^2 (biased),   r = 1 / sqrt(var + eps),
    xhat = (x - mu) r,   y = w xhat + b.

Backward (dy given; sums over R; w broadcast as in the forward):

    db = sum dy (over the axes w is shared across),   dw = sum dy xhat (same axes),
    dx = r (g - mean_R g - xhat mean_R(g xhat)),   g = w dy.

In batch norm R is exactly the axes w is shared across, so mean_R g = w db / n and mean_R(g xhat) = w dw / n,
and dx = w r (dy - db/n - xhat dw/n): no extra reductions at all. In eval mode batch norm uses the running
statistics, which are constants, so dx = w r dy. In training mode, on channels-last (or (N, C)) float NumPy
input with numba on, batch norm runs the two-pass compiled kernels of ``_norm_kernels`` instead.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional import _norm_kernels, _threads


def _optional(*ts: Tensor | None) -> tuple[tuple[Tensor, ...], tuple[bool, ...]]:
    """The non-None tensors (the Function's inputs) and which slots were present."""
    return tuple(t for t in ts if t is not None), tuple(t is not None for t in ts)


class BatchNormFunction(Function):
    """Batch norm over axes (0, 2, 3, ...) of x (N, C, *): statistics per channel. Inputs x[, w][, b]
    (w, b of shape (C,)). In training mode it uses batch statistics and updates the running ones (given
    as arrays, updated in place); otherwise it normalises with the running statistics."""

    def __init__(self, present: tuple[bool, bool], training: bool, running_mean: Any, running_var: Any,
                 momentum: float, eps: float) -> None:
        self.present, self.training = present, training
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x: Any, *wb: Any) -> Any:
        xp = get_array_module(x)
        w, b = _unpack(self.present, wb)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        n = x.size // x.shape[1]
        self.rows = None
        x2 = _norm_kernels.rows(x) if self.training and _norm_kernels.usable(xp, x) else None
        if x2 is not None:  # compiled: two passes over channels-last memory (NumPy's path below is the reference)
            y2, xhat2, mu, var = _norm_kernels.forward(x2, w, b, self.eps)
            self._update_running(mu.reshape(bshape), var.reshape(bshape), n)
            self.n, self.axes, self.bshape, self.w = n, axes, bshape, w
            self.r = (1.0 / xp.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype, copy=False).reshape(bshape)
            self.rows, self.xhat = xhat2, None
            return _norm_kernels.from_rows(y2, x.shape)
        if self.training:
            mu = x.mean(axis=axes, keepdims=True)
            xc = x - mu
            var = xp.mean(xc * xc, axis=axes, keepdims=True)  # two-pass: accurate for large means
            r = 1.0 / xp.sqrt(var + self.eps)
            xhat = xc
            xhat *= r
            self._update_running(mu, var, n)
        else:
            mu = self.running_mean.reshape(bshape).astype(x.dtype, copy=False)
            r = (1.0 / xp.sqrt(self.running_var.astype(x.dtype, copy=False) + self.eps)).reshape(bshape)
            xhat = (x - mu) * r
        self.n, self.axes, self.bshape, self.r, self.w = n, axes, bshape, r, w
        # xhat is needed by dx in training and by dw always; in eval with no dw it can be dropped
        self.xhat = xhat if self.training or (self.present[0] and any(self.needs_input_grad[1:2])) else None
        return _affine(xhat, w, b, bshape)

    def _update_running(self, mu: Any, var: Any, n: float) -> None:
        """In place, when given: running <- (1 - momentum) running + momentum stat, with the unbiased
        variance var n / (n - 1) (n elements per channel)."""
        m = self.momentum
        if self.running_mean is not None:
            rm = self.running_mean
            rm *= 1 - m
            rm += (m * mu.reshape(-1)).astype(rm.dtype, copy=False)
        if self.running_var is not None:
            rv = self.running_var
            rv *= 1 - m
            rv += (m * var.reshape(-1) * (n / max(n - 1, 1))).astype(rv.dtype, copy=False)  # unbiased

    def backward(self, gy: Any) -> Any:
        need = self.needs_input_grad
        axes, bshape = self.axes, self.bshape
        gw = gb = gx = None
        want_w = self.present[0] and need[1]
        want_b = self.present[1] and need[1 + self.present[0]]
        if self.rows is not None:
            return self._backward_compiled(gy, want_w, want_b)
        if want_b or (need[0] and self.training):
            gb = gy.sum(axis=axes)
        if want_w or (need[0] and self.training):
            gw = (gy * self.xhat).sum(axis=axes)
        if need[0]:
            scale = self.r if self.w is None else self.r * self.w.reshape(bshape)
            if self.training:
                inv_n = 1.0 / self.n
                gx = gy - (gb * inv_n).reshape(bshape)
                gx -= self.xhat * (gw * inv_n).reshape(bshape)
                gx *= scale
            else:
                gx = gy * scale
        out = [gx]
        if self.present[0]:
            out.append(gw if want_w else None)
        if self.present[1]:
            out.append(gb if want_b else None)
        return tuple(out)


    def _backward_compiled(self, gy: Any, want_w: bool, want_b: bool) -> tuple[Any, ...]:
        """The training-mode backward on the (M, C) rows of channels-last memory (``_norm_kernels``)."""
        gy2 = _norm_kernels.rows(gy)
        if gy2 is None:  # dy in another memory order: one copy into channels-last rows (split over threads)
            gy2 = _threads.contiguous(gy.transpose((0, *range(2, gy.ndim), 1))).reshape(-1, gy.shape[1])
        gb, gw = _norm_kernels.grad_sums(gy2, self.rows)
        gx = None
        if self.needs_input_grad[0]:
            scale = self.r.reshape(-1) if self.w is None else self.r.reshape(-1) * self.w
            gx = _norm_kernels.from_rows(_norm_kernels.grad_input(gy2, self.rows, gb, gw, scale, self.n), gy.shape)
        out = [gx]
        if self.present[0]:
            out.append(gw if want_w else None)
        if self.present[1]:
            out.append(gb if want_b else None)
        return tuple(out)


def _affine(xhat: Any, w: Any, b: Any, bshape: tuple[int, ...]) -> Any:
    """y = w xhat + b per channel (w, b of shape (C,) reshaped to ``bshape``; either may be None)."""
    y = xhat * w.reshape(bshape) if w is not None else xhat.copy()
    if b is not None:
        y += b.reshape(bshape)
    return y


def _unpack(present: tuple[bool, bool], wb: tuple[Any, ...]) -> tuple[Any, Any]:
    it = iter(wb)
    w = next(it) if present[0] else None
    b = next(it) if present[1] else None
    return w, b


def _check_vec(op: str, name: str, t: Tensor | None, size: int, x: Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != (size,):
        raise ValueError(f"{op}: {name} must have shape ({size},) for input {tuple(x.shape)}, got {tuple(t.shape)}")


def _check_batch_norm(op: str, input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
                      weight: Tensor | None, bias: Tensor | None, training: bool) -> int:
    """The argument checks shared by ``batch_norm`` and ``sync_batch_norm``; returns C."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input of at least 2 dimensions (N, C, ...), got shape {tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_vec(op, name, t, c, input)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must be given when training=False")
    return c


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation, as ``torch.nn.functional.batch_norm``, for input (N, C), (N, C, L) or (N, C, H, W).

    Training: normalise with the batch mean and biased variance per channel, and (when given) update
    ``running_mean``/``running_var`` in place: r <- (1 - momentum) r + momentum * stat, with the *unbiased*
    variance n/(n-1) var for the running estimate, exactly like PyTorch. Eval: normalise with the running
    statistics. ``weight``/``bias`` (C,) are the optional affine parameters.
    """
    op = "batch_norm"
    c = _check_batch_norm(op, input, running_mean, running_var, weight, bias, training)
    if training and input.numel() // c <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input of shape "
                         f"{tuple(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} differs from input dtype {input.dtype}")
    inputs, present = _optional(input, weight, bias)
    fn = BatchNormFunction(present[1:], bool(training), None if running_mean is None else running_mean.array,
                   None if running_var is None else running_var.array, float(momentum), float(eps))
    return fn(*inputs)


class LayerNormFunction(Function):
    """Layer norm of x (*, D1..Dk) over its last k axes; inputs x[, w][, b] with w, b of shape (D1..Dk)."""

    def __init__(self, present: tuple[bool, bool], k: int, eps: float) -> None:
        self.present, self.k, self.eps = present, k, eps

    def forward(self, x: Any, *wb: Any) -> Any:
        xp = get_array_module(x)
        w, b = _unpack(self.present, wb)
        axes = tuple(range(x.ndim - self.k, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        xhat = x - mu
        var = xp.mean(xhat * xhat, axis=axes, keepdims=True)
        r = 1.0 / xp.sqrt(var + self.eps)
        xhat *= r
        self.axes, self.r, self.xhat, self.w = axes, r, xhat, w
        y = xhat * w if w is not None else xhat.copy()
        if b is not None:
            y += b
        return y

    def backward(self, gy: Any) -> Any:
        need = self.needs_input_grad
        lead = tuple(range(gy.ndim - self.k))  # the axes w and b are shared across
        out: list[Any] = []
        if need[0]:
            g = gy * self.w if self.w is not None else gy
            m1 = g.mean(axis=self.axes, keepdims=True)
            m2 = (g * self.xhat).mean(axis=self.axes, keepdims=True)
            gx = g - m1
            gx -= self.xhat * m2
            gx *= self.r
            out.append(gx)
        else:
            out.append(None)
        i = 1
        if self.present[0]:
            out.append((gy * self.xhat).sum(axis=lead) if need[i] else None)
            i += 1
        if self.present[1]:
            out.append(gy.sum(axis=lead) if need[i] else None)
        return tuple(out)


def layer_norm(input: Tensor, normalized_shape: Any, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the trailing ``normalized_shape`` axes, as
    ``torch.nn.functional.layer_norm``. input (*, *normalized_shape); weight, bias of shape normalized_shape."""
    op = "layer_norm"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k :]) != shape:
        raise ValueError(
            f"{op}: normalized_shape {shape} must match the trailing dimensions of input {tuple(input.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(t.shape)}")
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} differs from input dtype {input.dtype}")
    inputs, present = _optional(input, weight, bias)
    return LayerNormFunction(present[1:], k, float(eps))(*inputs)


class GroupNormFunction(Function):
    """Group norm of x (N, C, *): statistics per sample over each group of C/G channels and all spatial
    positions; w, b of shape (C,) applied per channel."""

    def __init__(self, present: tuple[bool, bool], groups: int, eps: float) -> None:
        self.present, self.groups, self.eps = present, groups, eps

    def forward(self, x: Any, *wb: Any) -> Any:
        xp = get_array_module(x)
        w, b = _unpack(self.present, wb)
        n, c = x.shape[:2]
        self.shape = x.shape
        self.cshape = (1, c) + (1,) * (x.ndim - 2)
        xg = x.reshape(n, self.groups, -1)
        mu = xg.mean(axis=2, keepdims=True)
        xhat = xg - mu
        var = xp.mean(xhat * xhat, axis=2, keepdims=True)
        r = 1.0 / xp.sqrt(var + self.eps)
        xhat *= r
        self.r, self.xhat, self.w = r, xhat, w
        xh = xhat.reshape(x.shape)
        y = xh * w.reshape(self.cshape) if w is not None else xh.copy()
        if b is not None:
            y += b.reshape(self.cshape)
        return y

    def backward(self, gy: Any) -> Any:
        need = self.needs_input_grad
        n = gy.shape[0]
        sum_axes = (0,) + tuple(range(2, gy.ndim))
        xh = self.xhat.reshape(self.shape)
        out: list[Any] = []
        if need[0]:
            g = (gy * self.w.reshape(self.cshape) if self.w is not None else gy).reshape(n, self.groups, -1)
            m1 = g.mean(axis=2, keepdims=True)
            m2 = (g * self.xhat).mean(axis=2, keepdims=True)
            gx = g - m1
            gx -= self.xhat * m2
            gx *= self.r
            out.append(gx.reshape(self.shape))
        else:
            out.append(None)
        i = 1
        if self.present[0]:
            out.append((gy * xh).sum(axis=sum_axes) if need[i] else None)
            i += 1
        if self.present[1]:
            out.append(gy.sum(axis=sum_axes) if need[i] else None)
        return tuple(out)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Group normalisation, as ``torch.nn.functional.group_norm``: input (N, C, *), C divisible by
    ``num_groups``; weight, bias (C,)."""
    op = "group_norm"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input of at least 2 dimensions (N, C, ...), got shape {tuple(input.shape)}")
    c = input.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(
            f"{op}: num_groups={num_groups!r} must be a positive int dividing the {c} channels of input "
            f"{tuple(input.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        _check_vec(op, name, t, c, input)
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} differs from input dtype {input.dtype}")
    inputs, present = _optional(input, weight, bias)
    return GroupNormFunction(present[1:], num_groups, float(eps))(*inputs)


__all__ = ["batch_norm", "group_norm", "layer_norm"]
