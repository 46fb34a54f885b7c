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

NumPy needs about seven whole-array passes for the forward and six for the backward.
``tests/test_functional_cnn_kernels_pool_norm.py`` compares both paths on the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy

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
    def _stats(x, mean, var):
        m, c = x.shape
        shift = numpy.empty(c, numpy.float64)
        s1 = numpy.zeros(c, numpy.float64)
        s2 = numpy.zeros(c, numpy.float64)
        for j in range(c):
            shift[j] = x[0, j]
        for i in range(m):
            row = x[i]
            for j in range(c):
                d = row[j] - shift[j]
                s1[j] += d
                s2[j] += d * d
        for j in range(c):
            mu = s1[j] / m
            mean[j] = shift[j] + mu
            var[j] = max(s2[j] / m - mu * mu, 0.0)

    @njit(cache=True, nogil=True, error_model="numpy")
    def _normalize(x, mean, r, w, b, xhat, y):
        m, c = x.shape
        for i in range(m):
            xr, hr, yr = x[i], xhat[i], y[i]
            for j in range(c):
                h = (xr[j] - mean[j]) * r[j]
                hr[j] = h
                yr[j] = h * w[j] + b[j]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_sums(gy, xhat, gb, gw):
        m, c = gy.shape
        s1 = numpy.zeros(c, numpy.float64)
        s2 = numpy.zeros(c, numpy.float64)
        for i in range(m):
            gr, hr = gy[i], xhat[i]
            for j in range(c):
                g = gr[j]
                s1[j] += g
                s2[j] += g * hr[j]
        for j in range(c):
            gb[j] = s1[j]
            gw[j] = s2[j]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_input(gy, xhat, gbn, gwn, scale, gx):
        m, c = gy.shape
        for i in range(m):
            gr, hr, xr = gy[i], xhat[i], gx[i]
            for j in range(c):
                xr[j] = scale[j] * (gr[j] - gbn[j] - hr[j] * gwn[j])


def forward(x2: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any, Any]:
    """x2 (M, C) -> (y2, xhat2, mean, var), each of x2's dtype; mean and var (C,) the batch statistics
    (biased variance); w, b (C,) or None."""
    m, c = x2.shape
    dt = x2.dtype
    mean, var = numpy.empty(c, dt), numpy.empty(c, dt)
    _stats(x2, mean, var)
    r = (1.0 / numpy.sqrt(var + dt.type(eps))).astype(dt, copy=False)
    xhat, y = numpy.empty_like(x2), numpy.empty_like(x2)
    _normalize(x2, mean, r, numpy.ones(c, dt) if w is None else w, numpy.zeros(c, dt) if b is None else b, xhat, y)
    return y, xhat, mean, var


def grad_sums(gy2: Any, xhat2: Any) -> tuple[Any, Any]:
    """(db, dw) = (sum_m dy, sum_m dy xhat), each (C,) of dy's dtype."""
    c = gy2.shape[1]
    gb, gw = numpy.empty(c, gy2.dtype), numpy.empty(c, gy2.dtype)
    _grad_sums(gy2, xhat2, gb, gw)
    return gb, gw


def grad_input(gy2: Any, xhat2: Any, gb: Any, gw: Any, scale: Any, n: int) -> Any:
    """dx (M, C) = scale (dy - db/n - xhat dw/n), scale = w r per channel."""
    gx = numpy.empty_like(gy2)
    _grad_input(gy2, xhat2, gb / n, gw / n, scale, gx)
    return gx
