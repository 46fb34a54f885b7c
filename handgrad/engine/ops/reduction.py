"""Reductions over axes: sum, mean (more in this file as they are added)."""

from __future__ import annotations

import builtins
import math
from typing import Any, NamedTuple

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops.arithmetic import maximum, minimum
from handgrad.engine.ops.unary import clone
from handgrad.engine.tensor import Tensor

_bmax = builtins.max  # this module defines its own max/min/sum


def normalize_axes(dim: Any, ndim: int, op: str) -> tuple[int, ...] | None:
    """``dim`` (int, tuple or None) as a sorted tuple of non-negative axes; a clear error if out of range."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, numpy.integer)) else tuple(dim)
    if not dims:  # dim=() or [] reduces over everything, as in torch.sum
        return None
    out = []
    for d in dims:
        if not isinstance(d, (int, numpy.integer)):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        if not -_bmax(ndim, 1) <= d < _bmax(ndim, 1):
            raise IndexError(
                f"{op}: dim {d} is out of range for a tensor with {ndim} dimensions "
                f"(expected to be in [{-_bmax(ndim, 1)}, {_bmax(ndim, 1) - 1}])"
            )
        out.append(int(d) % _bmax(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim!r} names the same dimension more than once")
    if ndim == 0:
        return None
    return tuple(sorted(out))


# Below this many elements, a filled copy is cheaper than NumPy's broadcast_to machinery (a few
# microseconds of Python per call); above it, the zero-copy view saves memory traffic.
_MATERIALIZE_MAX = 1 << 15


def expand_reduced(g: Any, shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: bool) -> Any:
    """Broadcast a reduced gradient back to ``shape`` (re-inserting the reduced axes if dropped)."""
    xp = get_array_module(g)
    if axes is None:
        kshape: tuple[int, ...] = (1,) * len(shape)
    elif keepdims:
        kshape = g.shape
    else:
        kshape = tuple(1 if i in axes else n for i, n in enumerate(shape))
    g = g.reshape(kshape)
    if math.prod(shape) <= _MATERIALIZE_MAX:
        out = xp.empty(shape, g.dtype)
        out[...] = g
        return out
    return xp.broadcast_to(g, shape)


class SumFunction(Function):
    """y = sum_{axes} x;  dx = gy broadcast back over the summed axes."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        xp = get_array_module(x)
        return xp.asarray(x.sum(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy: Any) -> Any:
        return expand_reduced(gy, self.shape, self.axes, self.keepdims)


class MeanFunction(Function):
    """y = (1/n) sum_{axes} x;  dx = gy / n broadcast back."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        xp = get_array_module(x)
        n = x.size if self.axes is None else math.prod([x.shape[a] for a in self.axes])
        self.n = _bmax(n, 1)
        return xp.asarray(x.mean(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy: Any) -> Any:
        return expand_reduced(gy / self.n, self.shape, self.axes, self.keepdims)


def sum(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001 - torch name
    return SumFunction(normalize_axes(dim, x.ndim, "sum"), keepdim)(x)


def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    if x.dtype.kind not in "fc":
        raise TypeError(f"mean: expected a floating tensor, got dtype {x.dtype}; cast it with .float() first")
    return MeanFunction(normalize_axes(dim, x.ndim, "mean"), keepdim)(x)


def _restore(g: Any, shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: bool) -> Any:
    """A reduced array with the reduced axes put back (size 1), so it broadcasts against the input."""
    if keepdims:
        return g
    if axes is None:
        return g.reshape((1,) * len(shape))
    return get_array_module(g).expand_dims(g, axes)


class MaxMinAllFunction(Function):
    """y = max x (or min) over all elements;  dx = gy / k at each of the k elements equal to y
    (the gradient is shared evenly over ties, as in PyTorch; over the NaNs if y is NaN)."""

    def __init__(self, is_max: bool) -> None:
        self.is_max = is_max

    def forward(self, x: Any) -> Any:
        if x.size == 0:
            raise RuntimeError(f"{'max' if self.is_max else 'min'}: cannot reduce an empty tensor of shape {x.shape}")
        xp = get_array_module(x)
        self.x = x
        self.y = xp.asarray(x.max() if self.is_max else x.min())
        return self.y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        mask = xp.isnan(self.x) if xp.isnan(self.y) else self.x == self.y
        return mask * (gy / mask.sum()).astype(gy.dtype)


class AmaxAminFunction(Function):
    """y = amax/amin of x over ``axes``;  dx = gy / k at the k elements of each reduced slice equal to
    its extreme (ties share evenly)."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool, is_max: bool) -> None:
        self.axes, self.keepdims, self.is_max = axes, keepdims, is_max

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        red = xp.amax if self.is_max else xp.amin
        self.x = x
        self.y = xp.asarray(red(x, axis=self.axes, keepdims=self.keepdims))
        return self.y

    def backward(self, gy: Any) -> Any:
        y = _restore(self.y, self.x.shape, self.axes, self.keepdims)
        g = _restore(gy, self.x.shape, self.axes, self.keepdims)
        mask = self.x == y
        count = mask.sum(axis=self.axes, keepdims=True)
        return mask * (g / count).astype(gy.dtype)


class MaxMinDimFunction(Function):
    """values = max (or min) of x along ``dim``, with the index of the first extreme;
    dx = gy placed at that index (zeros elsewhere), as in PyTorch."""

    def __init__(self, dim: int, keepdims: bool, is_max: bool) -> None:
        self.dim, self.keepdims, self.is_max = dim, keepdims, is_max

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.shape = x.shape
        arg = xp.argmax if self.is_max else xp.argmin
        idx = xp.expand_dims(arg(x, axis=self.dim), self.dim)
        self.idx = idx
        values = xp.take_along_axis(x, idx, axis=self.dim)
        return values if self.keepdims else values.squeeze(self.dim)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, gy.dtype)
        g = gy if self.keepdims else xp.expand_dims(gy, self.dim)
        xp.put_along_axis(gx, self.idx, g, axis=self.dim)
        return gx


class VarFunction(Function):
    """y = sum_{axes} (x - mean)^2 / (N - correction);  dx = gy * 2 (x - mean) / (N - correction).

    With ``sqrt=True`` it is the standard deviation s = sqrt(var);  dx = gy (x - mean) / ((N - c) s),
    taken as 0 where s == 0 (PyTorch's convention)."""

    def __init__(self, axes: tuple[int, ...] | None, correction: float, keepdims: bool, sqrt: bool) -> None:
        self.axes, self.correction, self.keepdims, self.sqrt = axes, correction, keepdims, sqrt

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        n = x.size if self.axes is None else int(numpy.prod([x.shape[a] for a in self.axes]))
        self.denom = _bmax(n - self.correction, 0)
        self.xc = x - x.mean(axis=self.axes, keepdims=True)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            v = xp.asarray((self.xc * self.xc).sum(axis=self.axes, keepdims=self.keepdims) / self.denom)
            v = v.astype(x.dtype, copy=False)
            if self.sqrt:
                v = xp.sqrt(v)
        self.y = v
        return v

    def backward(self, gy: Any) -> Any:
        shape = self.xc.shape
        g = _restore(gy, shape, self.axes, self.keepdims)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            if self.sqrt:
                y = _restore(self.y, shape, self.axes, self.keepdims)
                g = get_array_module(gy).where(y == 0, 0, g / y).astype(gy.dtype, copy=False)
                return g * self.xc / self.denom
            return g * self.xc * (2 / self.denom) if self.denom else g * self.xc * numpy.inf


class LogSumExpFunction(Function):
    """y = ln sum_{axes} e^x, computed as m + ln sum e^{x - m} with m the max (finite for any x);
    dx = gy e^{x - y} (the softmax of x over the axes)."""

    def __init__(self, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        m = x.max(axis=self.axes, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, x.dtype)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or inf) slices: shift by 0, the result is then exact
        with numpy.errstate(divide="ignore"):
            y = xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True)) + m
        self.x, self.yk = x, y
        return y if self.keepdims else (y.reshape(()) if self.axes is None else y.squeeze(self.axes))

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        g = _restore(gy, self.x.shape, self.axes, self.keepdims)
        return g * xp.exp(self.x - self.yk)


class ProdFunction(Function):
    """y = prod_{axis} x;  dx_i = gy prod_{j != i} x_j, from exclusive left and right running products
    (exact when some x_j are zero, where y / x_i would divide by zero)."""

    def __init__(self, axis: int | None, keepdims: bool) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.x = x
        return xp.asarray(x.prod(axis=self.axis, keepdims=self.keepdims))

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x = self.x
        if self.axis is None:
            v = x.reshape(-1, 1)
            axis = 0
        else:
            v, axis = x, self.axis
        n = v.shape[axis]
        if n == 0:
            return xp.zeros(x.shape, gy.dtype)
        ones_shape = list(v.shape)
        ones_shape[axis] = 1
        one = xp.ones(ones_shape, x.dtype)
        # left[i] = prod_{j<i} x_j, right[i] = prod_{j>i} x_j
        left = xp.concatenate([one, xp.cumprod(xp.take(v, xp.arange(n - 1), axis=axis), axis=axis)], axis=axis)
        rev = xp.flip(v, axis=axis)
        right = xp.flip(
            xp.concatenate([one, xp.cumprod(xp.take(rev, xp.arange(n - 1), axis=axis), axis=axis)], axis=axis),
            axis=axis,
        )
        others = (left * right).reshape(x.shape)
        return _restore(gy, x.shape, None if self.axis is None else (self.axis,), self.keepdims) * others


class MaxMinResult(NamedTuple):
    """What ``max(x, dim)`` / ``min(x, dim)`` return, like ``torch.return_types.max``."""

    values: Tensor
    indices: Tensor


def _check_float(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def _max_min(x: Tensor, dim: Any, keepdim: bool, is_max: bool) -> Any:
    op = "max" if is_max else "min"
    _check_float(op, x)
    if isinstance(dim, Tensor):  # torch.max(a, b) is the element-wise maximum
        return maximum(x, dim) if is_max else minimum(x, dim)
    if dim is None:
        if x.numel() == 0:
            raise RuntimeError(f"{op}: cannot reduce an empty tensor of shape {x.shape}")
        return MaxMinAllFunction(is_max)(x)
    if not isinstance(dim, (int, numpy.integer)):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    axes = normalize_axes(dim, x.ndim, op)
    d = 0 if axes is None else axes[0]
    if x.ndim and x.shape[d] == 0:
        raise IndexError(f"{op}: cannot reduce over dim {dim} of size 0 (input shape {x.shape})")
    if x.ndim == 0:
        return MaxMinResult(clone_op(x), Tensor(numpy.zeros((), numpy.int64)))
    fn = MaxMinDimFunction(d, keepdim, is_max)
    values = fn(x)
    return MaxMinResult(values, Tensor._from_op(fn.idx if keepdim else fn.idx.squeeze(d), None, 0))


def clone_op(x: Tensor) -> Tensor:
    return clone(x)


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001 - torch name
    """``max(x)``: the largest element (gradient shared over ties). ``max(x, dim, keepdim=False)``:
    ``(values, indices)`` along ``dim``. ``max(x, other)``: the element-wise maximum."""
    return _max_min(x, dim, keepdim, True)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001 - torch name
    """``min(x)``, ``min(x, dim, keepdim=False) -> (values, indices)``, ``min(x, other)``; see ``max``."""
    return _max_min(x, dim, keepdim, False)


def amax(x: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (an int, a tuple, or ``()`` for all); ties share the gradient evenly."""
    _check_float("amax", x)
    if x.numel() == 0:
        raise RuntimeError(f"amax: cannot reduce an empty tensor of shape {x.shape}")
    return AmaxAminFunction(normalize_axes(dim, x.ndim, "amax"), keepdim, True)(x)


def amin(x: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Minimum over ``dim`` (an int, a tuple, or ``()`` for all); ties share the gradient evenly."""
    _check_float("amin", x)
    if x.numel() == 0:
        raise RuntimeError(f"amin: cannot reduce an empty tensor of shape {x.shape}")
    return AmaxAminFunction(normalize_axes(dim, x.ndim, "amin"), keepdim, False)(x)


def _arg(x: Tensor, dim: Any, keepdim: bool, is_max: bool) -> Tensor:
    op = "argmax" if is_max else "argmin"
    _check_float(op, x)
    if x.numel() == 0:
        raise RuntimeError(f"{op}: cannot reduce an empty tensor of shape {x.shape}")
    xp = get_array_module(x.array)
    f = xp.argmax if is_max else xp.argmin
    if dim is None:
        i = f(x.array)
        out = xp.asarray(i, dtype=numpy.int64)
        return Tensor._from_op(out.reshape((1,) * x.ndim) if keepdim else out, None, 0)
    if not isinstance(dim, (int, numpy.integer)):
        raise TypeError(f"{op}: dim must be an int or None, got {dim!r}")
    axes = normalize_axes(dim, x.ndim, op)
    if axes is None:  # a 0-d tensor
        return Tensor._from_op(xp.zeros((), numpy.int64), None, 0)
    out = f(x.array, axis=axes[0], keepdims=keepdim).astype(numpy.int64, copy=False)
    return Tensor._from_op(xp.asarray(out), None, 0)


def argmax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Index of the (first) largest element, over the flattened tensor or along ``dim``. No gradient."""
    return _arg(x, dim, keepdim, True)


def argmin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Index of the (first) smallest element, over the flattened tensor or along ``dim``. No gradient."""
    return _arg(x, dim, keepdim, False)


def _correction(op: str, unbiased: Any, correction: Any) -> float:
    if unbiased is not None and correction is not None:
        raise ValueError(f"{op}: give either unbiased or correction, not both")
    if correction is not None:
        return float(correction)
    if unbiased is None:
        return 1.0
    if not isinstance(unbiased, bool):
        raise TypeError(f"{op}: unbiased must be a bool, got {unbiased!r}")
    return 1.0 if unbiased else 0.0


def var(
    x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None
) -> Tensor:
    """Variance over ``dim`` (all by default): sum (x - mean)^2 / (N - correction); ``correction=1``
    (Bessel, the default) or ``unbiased=False`` (correction 0)."""
    if isinstance(dim, bool):  # the legacy var(x, unbiased) call
        dim, unbiased = None, dim
    _check_float("var", x)
    if x.dtype.kind != "f":
        raise TypeError(f"var: expected a floating tensor, got dtype {x.dtype}")
    return VarFunction(normalize_axes(dim, x.ndim, "var"), _correction("var", unbiased, correction), keepdim, False)(x)


def std(
    x: Tensor, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None
) -> Tensor:
    """Standard deviation: sqrt of ``var`` with the same arguments (gradient 0 where it is 0)."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    _check_float("std", x)
    if x.dtype.kind != "f":
        raise TypeError(f"std: expected a floating tensor, got dtype {x.dtype}")
    return VarFunction(normalize_axes(dim, x.ndim, "std"), _correction("std", unbiased, correction), keepdim, True)(x)


def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """ln sum exp x over ``dim`` (int or tuple), stable for large and -inf inputs."""
    _check_float("logsumexp", x)
    if x.dtype.kind != "f":
        raise TypeError(f"logsumexp: expected a floating tensor, got dtype {x.dtype}")
    return LogSumExpFunction(normalize_axes(dim, x.ndim, "logsumexp"), keepdim)(x)


def prod(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Product of all elements, or along one ``dim``; the gradient is exact with zeros present."""
    _check_float("prod", x)
    if dim is not None and not isinstance(dim, (int, numpy.integer)):
        raise TypeError(f"prod: dim must be an int or None, got {dim!r}")
    axes = normalize_axes(dim, x.ndim, "prod")
    return ProdFunction(None if axes is None else axes[0], keepdim)(x)
