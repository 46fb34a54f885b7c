"""Compiled (numba) ReLU: the forward writes ``y = max(x, 0)`` and the mask ``[x > 0]`` in one pass, the backward
``dx = dy [x > 0]`` in one pass; both split over ``_threads`` (contiguous ranges of the memory) at more than one
BLAS thread.

``engine/ops/unary.ReLUFunction``'s NumPy code (``x > 0``, ``maximum(x, 0)``; ``gy * mask``: three passes, one
thread) is the reference and the fallback (other devices, numba absent, ``HANDGRAD_NUMBA=0``, small or
non-dense arrays, a gradient laid out unlike the input). The numbers are NumPy's bit for bit: ``maximum``'s
rule ``x if (x > 0 or x is NaN) else 0`` (so -0.0 gives +0.0) and ``gy * 1.0`` / ``gy * 0.0``. The engine
cannot import this module (``handgrad.functional`` imports the engine), so importing it registers it as
``ReLUFunction.kernel``.

Layout: a conv's output is channels-last memory seen as NCHW (not C-contiguous); any array whose memory is
one dense block is handled by walking that memory in order (the axes sorted by stride), with ``y``, the mask
and ``dx`` allocated in the same layout; a gradient that is a cropped view (a conv's padded input gradient) is
read row by row. Measured (1 thread, LeNet's two ReLUs, forward + backward): 3.9 ms in NumPy, 1.9 ms here.
``tests/test_functional_act_kernels.py`` compares both paths.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy

from handgrad.engine.ops.unary import ReLUFunction
from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels as _rnn_kernels

MIN_SIZE = 1 << 14  # below this NumPy's three passes cost about the kernel's call overhead

njit = None
if _rnn_kernels.ENABLED:
    try:
        from numba import njit
    except ImportError:  # pragma: no cover
        njit = None


def _order(a: Any) -> tuple[int, ...] | None:
    """The axis order that makes ``a.transpose(order)`` C-contiguous (its memory order), or None (not dense)."""
    order = tuple(sorted(range(a.ndim), key=lambda i: -a.strides[i]))
    return order if a.transpose(order).flags.c_contiguous else None


def _flat(a: Any, order: tuple[int, ...]) -> Any:
    t = a.transpose(order)
    return t.reshape(-1) if t.flags.c_contiguous else None


def forward(x: Any) -> tuple[Any, Any] | None:
    """``(y, mask)`` for a dense float32/float64 NumPy array of at least MIN_SIZE elements; None otherwise."""
    if njit is None or type(x) is not numpy.ndarray or x.dtype not in (numpy.float32, numpy.float64):
        return None
    if x.size < MIN_SIZE:
        return None
    order = _order(x)
    if order is None:
        return None
    y = numpy.empty_like(x)  # order "K": the same memory layout
    mask = numpy.empty_like(x, dtype=numpy.bool_)
    xf, yf, mf = _flat(x, order), _flat(y, order), _flat(mask, order)
    if yf is None or mf is None:  # pragma: no cover - empty_like keeps a dense layout
        return None
    _threads.run(lambda lo, hi: _relu_fwd(xf[lo:hi], yf[lo:hi], mf[lo:hi]), xf.size, xf.size)
    return y, mask


def backward(gy: Any, mask: Any) -> Any | None:
    """``gy * mask`` (in the mask's memory layout) when gy is a float32/float64 NumPy array of mask's shape laid
    out densely like the mask, or 4-D with a unit-stride innermost axis in the mask's order; None otherwise (the
    caller falls back to NumPy)."""
    if (type(gy) is not numpy.ndarray or gy.shape != mask.shape or gy.dtype not in (numpy.float32, numpy.float64)
            or gy.size < MIN_SIZE):
        return None
    order = _order(mask)
    if order is None:
        return None
    gf, mf = _flat(gy, order), _flat(mask, order)
    if mf is None:  # pragma: no cover - _order checked it
        return None
    gx = numpy.empty_like(mask, dtype=gy.dtype)  # the mask's (the input's) layout
    xf = _flat(gx, order)
    if gf is not None:
        _threads.run(lambda lo, hi: _relu_bwd(gf[lo:hi], mf[lo:hi], xf[lo:hi]), gf.size, gf.size)
        return gx
    if gy.ndim != 4 or gy.transpose(order).strides[-1] != gy.itemsize:
        return None
    # gy a strided view with a unit-stride last axis in the mask's memory order (a conv's padded input gradient
    # cropped): one pass over rows, gx in the mask's layout
    gp, mp, xp4 = gy.transpose(order), mask.transpose(order), gx.transpose(order)
    _threads.run(lambda lo, hi: _relu_bwd4(gp[lo:hi], mp[lo:hi], xp4[lo:hi]), gp.shape[0], gy.size)
    return gx


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _relu_fwd(x, y, m):
        zero = x.dtype.type(0.0)
        for i in range(x.shape[0]):
            v = x[i]
            m[i] = v > zero
            y[i] = v if (v > zero or v != v) else zero  # numpy.maximum(x, 0): NaN propagates, -0.0 -> 0.0

    @njit(cache=True, nogil=True, error_model="numpy")
    def _relu_bwd(g, m, out):
        one = g.dtype.type(1.0)
        zero = g.dtype.type(0.0)
        for i in range(g.shape[0]):
            out[i] = g[i] * (one if m[i] else zero)  # gy * mask as NumPy computes it (inf * 0 = NaN kept)

    @njit(cache=True, nogil=True, error_model="numpy")
    def _relu_bwd4(g, m, out):
        one = g.dtype.type(1.0)
        zero = g.dtype.type(0.0)
        for a in range(g.shape[0]):
            for b in range(g.shape[1]):
                for c in range(g.shape[2]):
                    gr, mr, orow = g[a, b, c], m[a, b, c], out[a, b, c]
                    for e in range(gr.shape[0]):
                        orow[e] = gr[e] * (one if mr[e] else zero)

    ReLUFunction.kernel = sys.modules[__name__]
