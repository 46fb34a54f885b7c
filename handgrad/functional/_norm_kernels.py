"""Compiled (numba) batch norm in training mode: two passes forward, two passes backward.

``normalization.BatchNormFunction``'s NumPy code is the reference and the fallback (other devices, numba
absent, ``HANDGRAD_NUMBA=0``, eval mode, inputs whose channels are not the innermost memory axis). The kernels
take x as an (M, C) matrix, M = N*H*W rows of C channels (channels-last memory, as conv returns it, or a
plain (N, C) batch), and accumulate in float64 whatever the input dtype:

    forward   pass 1: s1 = sum_m (x - x0),  s2 = sum_m (x - x0)^2   (one read; x0 = the first row, a shift
                      that keeps the one-pass variance accurate when |mean| >> std)
                      mu = x0 + s1/M,  var = s2/M - (s1/M)^2,  r = 1/sqrt(var + eps)
              pass 2: xhat = (x - mu) r,  y = w xhat + b
    backward  pass 1: db = sum_m dy,  dw = sum_m dy xhat
              pass 2: dx = w r (dy - db/M - xhat dw/M)

NumPy needs about seven whole-array passes for the forward and six for the backward. The rows are split over
``_threads`` (per-thread partial sums, added in float64).
``tests/test_functional_cnn_kernels_pool_norm.py`` compares both paths on the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels as _rnn_kernels

njit = None
if _rnn_kernels.ENABLED:
    try:
        from numba import njit
    except ImportError:  # pragma: no cover
        njit = None


def rows(x: Any) -> Any:
    """x (N, C, *) as the (M, C) matrix of its channels-last memory (a view), or None when its channels
    are not the innermost contiguous axis (then the NumPy path runs)."""
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    v = x.transpose(perm)
    if not v.flags.c_contiguous:
        return None
    return v.reshape(-1, x.shape[1])


def from_rows(m: Any, shape: tuple[int, ...]) -> Any:
    """Inverse of ``rows``: an (M, C) matrix as the logical (N, C, *) view of channels-last memory."""
    nd = len(shape)
    cl = m.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return cl.transpose((0, nd - 1) + tuple(range(1, nd - 1)))


def usable(xp: Any, x: Any) -> bool:
    """The compiled batch norm applies (one switch for all kernels: ``_rnn_kernels.ENABLED``)."""
    return _rnn_kernels.ENABLED and njit is not None and xp is numpy and x.dtype in (numpy.float32, numpy.float64)


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _shifted_sums(x, shift, s1, s2, r0, r1):
        """s1 = sum (x - shift), s2 = sum (x - shift)^2 over rows r0 <= i < r1 (float64)."""
        c = x.shape[1]
        for i in range(r0, r1):
            row = x[i]
            for j in range(c):
                d = row[j] - shift[j]
                s1[j] += d
                s2[j] += d * d

    @njit(cache=True, nogil=True, error_model="numpy")
    def _normalize(x, mean, r, w, b, xhat, y, r0, r1):
        c = x.shape[1]
        for i in range(r0, r1):
            xr, hr, yr = x[i], xhat[i], y[i]
            for j in range(c):
                h = (xr[j] - mean[j]) * r[j]
                hr[j] = h
                yr[j] = h * w[j] + b[j]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_sums(gy, xhat, s1, s2, r0, r1):
        """s1 += sum dy, s2 += sum dy xhat over rows r0 <= i < r1 (float64)."""
        c = gy.shape[1]
        for i in range(r0, r1):
            gr, hr = gy[i], xhat[i]
            for j in range(c):
                g = gr[j]
                s1[j] += g
                s2[j] += g * hr[j]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_input(gy, xhat, gbn, gwn, scale, gx, r0, r1):
        c = gy.shape[1]
        for i in range(r0, r1):
            gr, hr, xr = gy[i], xhat[i], gx[i]
            for j in range(c):
                xr[j] = scale[j] * (gr[j] - gbn[j] - hr[j] * gwn[j])


def _sums(kernel: Any, a: Any, b: Any, c: int) -> tuple[Any, Any]:
    """Two float64 per-channel sums of ``kernel`` over all rows, the rows split over ``_threads``."""

    def part(lo: int, hi: int) -> tuple[Any, Any]:
        s1, s2 = numpy.zeros(c), numpy.zeros(c)
        kernel(a, b, s1, s2, lo, hi)
        return s1, s2

    parts = _threads.run(part, a.shape[0], a.size)
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def forward(x2: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any, Any]:
    """x2 (M, C) -> (y2, xhat2, mean, var), each of x2's dtype; mean and var (C,) the batch statistics
    (biased variance); w, b (C,) or None. The rows are split over ``_threads``."""
    m, c = x2.shape
    dt = x2.dtype
    shift = x2[0].astype(numpy.float64)
    s1, s2 = _sums(_shifted_sums, x2, shift, c)
    mu = s1 / m
    mean = (shift + mu).astype(dt)
    var = numpy.maximum(s2 / m - mu * mu, 0.0).astype(dt)
    r = (1.0 / numpy.sqrt(var + dt.type(eps))).astype(dt, copy=False)
    xhat, y = numpy.empty_like(x2), numpy.empty_like(x2)
    w = numpy.ones(c, dt) if w is None else w
    b = numpy.zeros(c, dt) if b is None else b
    _threads.run(lambda lo, hi: _normalize(x2, mean, r, w, b, xhat, y, lo, hi), m, x2.size)
    return y, xhat, mean, var


def grad_sums(gy2: Any, xhat2: Any) -> tuple[Any, Any]:
    """(db, dw) = (sum_m dy, sum_m dy xhat), each (C,) of dy's dtype."""
    gb, gw = _sums(_grad_sums, gy2, xhat2, gy2.shape[1])
    return gb.astype(gy2.dtype), gw.astype(gy2.dtype)


def grad_input(gy2: Any, xhat2: Any, gb: Any, gw: Any, scale: Any, n: int) -> Any:
    """dx (M, C) = scale (dy - db/n - xhat dw/n), scale = w r per channel."""
    gx = numpy.empty_like(gy2)
    gbn, gwn = gb / n, gw / n
    _threads.run(lambda lo, hi: _grad_input(gy2, xhat2, gbn, gwn, scale, gx, lo, hi), gy2.shape[0], gy2.size)
    return gx
