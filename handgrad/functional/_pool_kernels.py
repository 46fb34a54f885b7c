"""Compiled (numba) max-pool forward and backward: one pass over the input, one scatter for the gradient.

``pooling.MaxPool2dFunction``'s NumPy code (kh*kw strided ``maximum`` calls, the arg-max masks rebuilt in the
backward by kh*kw compares) is the reference and the fallback (other devices, numba absent,
``HANDGRAD_NUMBA=0``). These kernels work on the padded input viewed as (B, Hp, Wp, C) with C innermost
(channels-last memory as it comes from conv; an NCHW array is passed as (N*C, Hp, Wp, 1)), and keep the
arg-max as the kernel-offset number k = p*kw + q of each output, so the backward is one scatter-add::

    y[b, i, j, c] = max_{p, q} xpad[b, i*sh + p*dh, j*sw + q*dw, c],   k[b, i, j, c] = first arg-max,
    dxpad[b, i*sh + p*dh, j*sw + q*dw, c] += dy[b, i, j, c]   with (p, q) = divmod(k, kw).

The arg-max rule is the NumPy path's (and PyTorch's): the first offset in (p, q) scan order attaining the
maximum; a NaN wins over any number (``maximum`` propagates it) and the first NaN is the one routed to.
The batch is split over ``_threads`` (each thread its own images). ``tests/test_functional_cnn_kernels_pool_norm.py``
compares both paths on the same inputs.
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


def usable(xp: Any, x: Any) -> bool:
    """The compiled max pool applies (one switch for all kernels: ``_rnn_kernels.ENABLED``)."""
    return _rnn_kernels.ENABLED and njit is not None and xp is numpy and x.dtype in (numpy.float32, numpy.float64)


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _max_fwd(x, y, idx, kh, kw, sh, sw, dh, dw, b0, b1):
        _, ho, wo, nc = y.shape
        for b in range(b0, b1):
            for i in range(ho):
                for j in range(wo):
                    yr = y[b, i, j]
                    ir = idx[b, i, j]
                    src = x[b, i * sh, j * sw]
                    for c in range(nc):
                        yr[c] = src[c]
                        ir[c] = 0
                    for p in range(kh):
                        for q in range(kw):
                            if p == 0 and q == 0:
                                continue
                            src = x[b, i * sh + p * dh, j * sw + q * dw]
                            k = p * kw + q
                            for c in range(nc):  # branch-free selects, so LLVM vectorises over C
                                v = src[c]
                                m = yr[c]
                                take = (v > m) | ((v != v) & (m == m))  # first strict max; first NaN wins
                                yr[c] = v if take else m
                                ir[c] = k if take else ir[c]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _max_bwd(gy, idx, gx, kh, kw, sh, sw, dh, dw, b0, b1):
        _, ho, wo, nc = gy.shape
        gx[b0:b1] = 0
        zero = gy.dtype.type(0)
        for b in range(b0, b1):
            for i in range(ho):
                for j in range(wo):
                    gr = gy[b, i, j]
                    ir = idx[b, i, j]
                    for p in range(kh):
                        for q in range(kw):
                            dst = gx[b, i * sh + p * dh, j * sw + q * dw]
                            k = p * kw + q
                            for c in range(nc):  # one masked add per offset: vectorises over C
                                dst[c] += gr[c] if ir[c] == k else zero


def _as_bhwc(a: Any, channels_last: bool) -> Any:
    """The (B, H, W, C) C-contiguous view the kernels take: (N, H, W, C) as is, NCHW as (N*C, H, W, 1)."""
    if channels_last:
        return numpy.ascontiguousarray(a)
    n, c, h, w = a.shape
    return numpy.ascontiguousarray(a).reshape(n * c, h, w, 1)


def max_pool_forward(xpad: Any, channels_last: bool, k: tuple[int, int], s: tuple[int, int],
                     d: tuple[int, int], out: tuple[int, int]) -> tuple[Any, Any]:
    """y and the arg-max offsets of a padded input in the pool's working layout ((N, H, W, C) when
    ``channels_last`` else (N, C, H, W)); both returned in that same layout."""
    xb = _as_bhwc(xpad, channels_last)
    bshape = (xb.shape[0], out[0], out[1], xb.shape[3])
    y = numpy.empty(bshape, xpad.dtype)
    idx = numpy.empty(bshape, numpy.int8 if k[0] * k[1] <= 127 else numpy.int32)
    _threads.run(lambda lo, hi: _max_fwd(xb, y, idx, k[0], k[1], s[0], s[1], d[0], d[1], lo, hi), xb.shape[0],
                 y.size * k[0] * k[1])
    if channels_last:
        return y, idx
    n, c = xpad.shape[:2]
    return y.reshape(n, c, out[0], out[1]), idx.reshape(n, c, out[0], out[1])


def max_pool_backward(gy: Any, idx: Any, padded_shape: tuple[int, ...], channels_last: bool,
                      k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> Any:
    """The gradient of the padded input (in the working layout) from dy and the forward's arg-max offsets."""
    gyb, ib = _as_bhwc(gy, channels_last), _as_bhwc(idx, channels_last)
    gx = numpy.empty(padded_shape, gy.dtype)
    gxb = gx if channels_last else gx.reshape(padded_shape[0] * padded_shape[1], *padded_shape[2:], 1)
    _threads.run(lambda lo, hi: _max_bwd(gyb, ib, gxb, k[0], k[1], s[0], s[1], d[0], d[1], lo, hi), gyb.shape[0],
                 gyb.size * k[0] * k[1])
    return gx
