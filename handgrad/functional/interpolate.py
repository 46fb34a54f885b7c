"""Resizing of 4-D (N, C, H, W) input: nearest, nearest-exact, bilinear and area, as PyTorch computes them.

Nearest and bilinear resizing are separable: resizing along H then along W. Along one axis of length
n_in -> n_out each output position o reads two source indices i0[o] <= i1[o] with weight l[o]:

    y[o] = (1 - l[o]) x[i0[o]] + l[o] x[i1[o]]          (nearest: i1 = i0, l = 0)

so the VJP is a scatter-add  dx[i] = sum_{o: i0[o]=i} (1-l[o]) dy[o] + sum_{o: i1[o]=i} l[o] dy[o].
The source indices never decrease with o, so each scatter-add is one ``add.reduceat`` over runs of equal
indices along the axis: vectorised, no ``ufunc.at``.

Source positions (PyTorch's conventions; ``scale`` = 1/scale_factor when a scale factor is given, else
n_in/n_out):

* nearest:        i0 = min(floor(o * scale), n_in - 1)   (computed in float32, like PyTorch)
* nearest-exact:  i0 = min(floor((o + 0.5) * scale), n_in - 1)
* bilinear, align_corners=True:   src = o * (n_in - 1) / (n_out - 1)
* bilinear, align_corners=False:  src = max((o + 0.5) * scale - 0.5, 0)
  then i0 = floor(src), i1 = min(i0 + 1, n_in - 1), l = src - i0.
* area: ``adaptive_avg_pool2d`` to the output size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.functional.pooling import adaptive_avg_pool2d

_MODES = ("nearest", "nearest-exact", "bilinear", "area")


def _axis_map(n_in: int, n_out: int, mode: str, align_corners: bool, scale_factor: float | None,
              dtype: Any) -> tuple[Any, Any, Any]:
    """(i0, i1, l) for one axis, as NumPy arrays (int64, int64, dtype)."""
    o = numpy.arange(n_out)
    if mode in ("nearest", "nearest-exact"):
        if scale_factor is not None and scale_factor > 0:
            scale = numpy.float32(1.0 / scale_factor)
        else:
            scale = numpy.float32(n_in) / numpy.float32(n_out)
        if mode == "nearest":
            if n_out == n_in:
                i0 = o
            elif n_out == 2 * n_in:
                i0 = o >> 1  # PyTorch's shortcut, exact where float rounding could differ
            else:
                i0 = numpy.floor(o.astype(numpy.float32) * scale).astype(numpy.int64)
        else:
            i0 = numpy.floor((o.astype(numpy.float32) + numpy.float32(0.5)) * scale).astype(numpy.int64)
        i0 = numpy.minimum(i0, n_in - 1)
        return i0, i0, numpy.zeros(n_out, dtype)
    # bilinear: PyTorch computes positions in the op's accumulation type (float for float32 input)
    acc = numpy.float64 if numpy.dtype(dtype) == numpy.float64 else numpy.float32
    if align_corners:
        scale = acc((n_in - 1) / (n_out - 1)) if n_out > 1 else acc(0)
        src = o.astype(acc) * scale
    else:
        if scale_factor is not None and scale_factor > 0:
            scale = acc(1.0 / scale_factor)
        else:
            scale = acc(n_in) / acc(n_out)
        src = numpy.maximum((o.astype(acc) + acc(0.5)) * scale - acc(0.5), acc(0))
    i0 = numpy.minimum(numpy.floor(src).astype(numpy.int64), n_in - 1)
    i1 = numpy.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(dtype)
    return i0, i1, lam


def _take(a: Any, idx: Any, axis: int) -> Any:
    return get_array_module(a).take(a, idx, axis=axis)


def _segment_sum(g: Any, idx: Any, n: int, axis: int) -> Any:
    """out[..., i, ...] = sum over o with idx[o] == i of g[..., o, ...] along ``axis``, for nondecreasing idx
    (a host array: the run boundaries are host index work, sent to ``g``'s device once found)."""
    xp = get_array_module(g)
    starts = numpy.flatnonzero(numpy.concatenate([[True], idx[1:] != idx[:-1]]))
    sums = xp.add.reduceat(g, xp.asarray(starts), axis=axis)
    if len(starts) == n:  # every source index is used (upsampling): the sums are already dx
        return sums
    shape = list(g.shape)
    shape[axis] = n
    out = xp.zeros(shape, g.dtype)
    sl = [slice(None)] * g.ndim
    sl[axis] = xp.asarray(idx[starts])
    out[tuple(sl)] = sums
    return out


def _lerp(x: Any, m: tuple[Any, Any, Any], axis: int, nearest: bool) -> Any:
    i0, i1, lam = m
    a = _take(x, i0, axis)
    if nearest:
        return a
    shape = [1] * x.ndim
    shape[axis] = -1
    lam = lam.reshape(shape)
    b = _take(x, i1, axis)
    # (1 - l) a + l b, written as a + l (b - a) to touch memory fewer times
    b -= a
    b *= lam
    a += b
    return a


def _lerp_t(g: Any, m: tuple[Any, Any, Any], n_in: int, axis: int, nearest: bool) -> Any:
    """The adjoint of ``_lerp``: two segment sums. ``m``: the host index maps and ``g``'s device weights."""
    i0, i1, lam = m
    if nearest:
        return _segment_sum(g, i0, n_in, axis)
    shape = [1] * g.ndim
    shape[axis] = -1
    lam = lam.reshape(shape)
    gb = g * lam
    ga = g - gb
    return _segment_sum(ga, i0, n_in, axis) + _segment_sum(gb, i1, n_in, axis)


class InterpolateFunction(Function):
    """y = resize_W(resize_H(x)) for x (N, C, H, W) -> y (N, C, Ho, Wo); dx = resize_H^T(resize_W^T(dy))."""

    def __init__(self, mh: tuple[Any, Any, Any], mw: tuple[Any, Any, Any], nearest: bool) -> None:
        self.mh, self.mw, self.nearest = mh, mw, nearest

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        # the maps on x's device for the gathers; ``self.mh`` / ``self.mw`` stay on the host for the backward
        mh = tuple(xp.asarray(a) for a in self.mh)
        mw = tuple(xp.asarray(a) for a in self.mw)
        self.lam_h, self.lam_w = mh[2], mw[2]
        self.hw = x.shape[2:]
        t = _lerp(x, mh, 2, self.nearest)
        return _lerp(t, mw, 3, self.nearest)

    def backward(self, gy: Any) -> Any:
        g = _lerp_t(gy, (*self.mw[:2], self.lam_w), self.hw[1], 3, self.nearest)
        return _lerp_t(g, (*self.mh[:2], self.lam_h), self.hw[0], 2, self.nearest)


def _pair_float(v: Any, op: str, name: str) -> tuple[Any, Any]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be a number or a pair for 4-D input, got {v!r}")
        return v[0], v[1]
    return v, v


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize the H, W axes of input (N, C, H, W), as ``torch.nn.functional.interpolate``.

    Exactly one of ``size`` (int or (Ho, Wo)) and ``scale_factor`` (float or pair; output floor(H * s))
    is given. ``mode``: 'nearest', 'nearest-exact', 'bilinear' or 'area'. ``align_corners`` (bilinear only,
    default False) maps the corner pixel centres onto each other. ``recompute_scale_factor=True`` uses
    n_in/n_out instead of 1/scale_factor for the source positions. ``antialias`` is not supported.
    """
    op = "interpolate"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 4:
        raise ValueError(f"{op}: only 4-D input (N, C, H, W) is supported, got input of shape {tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got dtype {input.dtype}")
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES}, got {mode!r}")
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    if align_corners is not None and mode != "bilinear":
        raise ValueError(f"{op}: align_corners option can only be set with the interpolating mode 'bilinear', "
                         f"not {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: exactly one of size or scale_factor should be defined")
    h, w = input.shape[2:]
    scales: tuple[Any, Any] = (None, None)
    if size is not None:
        out = _pair_float(size, op, "size")
        if not all(isinstance(s, (int, numpy.integer)) and s >= 1 for s in out):
            raise ValueError(f"{op}: size must be positive ints, got {size!r}")
        out = (int(out[0]), int(out[1]))
    else:
        sf = _pair_float(scale_factor, op, "scale_factor")
        if not all(isinstance(s, (int, float)) and s > 0 for s in sf):
            raise ValueError(f"{op}: scale_factor must be positive, got {scale_factor!r}")
        out = (int(math.floor(h * float(sf[0]))), int(math.floor(w * float(sf[1]))))
        if min(out) < 1:
            raise ValueError(
                f"{op}: scale_factor {scale_factor!r} gives an empty output for input {tuple(input.shape)}"
            )
        if not recompute_scale_factor:
            scales = (float(sf[0]), float(sf[1]))
    if mode == "area":
        return adaptive_avg_pool2d(input, out)
    ac = bool(align_corners)
    mh = _axis_map(h, out[0], mode, ac, scales[0], input.dtype)
    mw = _axis_map(w, out[1], mode, ac, scales[1], input.dtype)
    return InterpolateFunction(mh, mw, mode != "bilinear")(input)


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Tensor:
    """Deprecated PyTorch alias of ``interpolate``."""
    return interpolate(input, size, scale_factor, mode, align_corners)


__all__ = ["interpolate", "upsample"]
