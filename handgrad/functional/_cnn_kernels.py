"""Compiled (numba) col2im for the CNN ops: the scatter-add of a patch-gradient matrix back into an image.

``_cnn_util.col2im`` (NumPy) is the reference and the fallback (other devices, numba absent, ``HANDGRAD_NUMBA=0``,
groups > 1, dilated columns). NumPy's version is kh*wo strided adds, each a Python-level call moving short
runs; this kernel walks the patch matrix once, row by row, adding each (kernel row p) run of kw*C contiguous
values into the channels-last image: for every output pixel (n, i, j) and kernel row p::

    xpad[n, i*sh + p*dh, j*sw*C : j*sw*C + kw*C] += cols[(n, i, j), p*kw*C : (p+1)*kw*C]

``tests/test_functional_cnn_kernels.py`` compares it with the NumPy code. (A numba ``parallel=True`` variant
did not pay at 2 threads and was removed: threads come from the batch split below; BENCHMARKS.md.)

At more than one BLAS thread the conv's im2col path splits its batch over ``_threads`` instead
(``conv_forward_split`` / ``conv_backward_split``: each thread copies and multiplies its images' patch rows,
runs their patch-gradient GEMM and the serial col2im, and a part of dW); ``tests/test_functional_cnn_threads.py``
compares one thread with two.
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


def usable(xp: Any, cols: Any, groups: int, dilation_w: int) -> bool:
    """The compiled col2im applies (the flag is shared with the recurrent kernels: one switch for all)."""
    return (_rnn_kernels.ENABLED and njit is not None and xp is numpy and groups == 1 and dilation_w == 1
            and cols.dtype in (numpy.float32, numpy.float64) and cols.flags.c_contiguous)


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _col2im_serial(cols, xpad, ho, wo, kh, kwc, sh, sw, dh, c):
        for b in range(xpad.shape[0]):
            xb = xpad[b]
            xb[:] = 0
            for i in range(ho):
                for j in range(wo):
                    row = cols[(b * ho + i) * wo + j]
                    w0 = j * sw * c
                    for p in range(kh):
                        dst = xb[i * sh + p * dh]
                        o = p * kwc
                        for e in range(kwc):
                            dst[w0 + e] += row[o + e]


def col2im(cols: Any, padded_shape: tuple[int, int, int, int], k: tuple[int, int], s: tuple[int, int],
           d: tuple[int, int], out: tuple[int, int]) -> Any:
    """Same contract as ``_cnn_util.col2im`` for groups == 1 and no column dilation: cols (1, N*Ho*Wo,
    kh*kw*C) -> a new (N, Hp, Wp, C) array."""
    n, hp, wp, c = padded_shape
    xpad = numpy.empty(padded_shape, cols.dtype)
    _col2im_serial(cols.reshape(cols.shape[1], cols.shape[2]), xpad.reshape(n, hp, wp * c), out[0], out[1], k[0],
                   k[1] * c, s[0], s[1], d[0], c)
    return xpad


# -- the batch split over threads (``_threads``): im2col + GEMM forward, GEMMs + col2im backward -------------
def split_usable(xp: Any, dtype: Any, groups: int, dilation_w: int, n: int, work: int) -> bool:
    """The conv's im2col path splits its batch over threads: compiled col2im usable and more than one worker
    for ``work`` multiply-adds."""
    return (_rnn_kernels.ENABLED and njit is not None and xp is numpy and groups == 1 and dilation_w == 1
            and dtype in (numpy.float32, numpy.float64) and _threads.workers(n, work) > 1)


def conv_forward_split(win: Any, wm: Any, b: Any, out: tuple[int, int]) -> tuple[Any, Any]:
    """y (N, Ho, Wo, O) = im2col(x) wm^T (+ b) and the patch matrix cols (1, N*Ho*Wo, K), each thread copying
    and multiplying the rows of its images. win: the (N, Ho, Wo, kh, kw, C) window view; wm (O, K)."""
    n, ho, wo = win.shape[:3]
    per, o = ho * wo, wm.shape[0]
    cols = numpy.empty((1, n * per, win[0, 0, 0].size), win.dtype)
    y = numpy.empty((n, ho, wo, o), win.dtype)

    def part(lo: int, hi: int) -> None:
        rows = cols[0, lo * per : hi * per]
        numpy.copyto(rows.reshape(hi - lo, *win.shape[1:]), win[lo:hi])
        numpy.matmul(rows, wm.T, out=y[lo:hi].reshape(-1, o))
        if b is not None:
            y[lo:hi] += b

    _threads.run(part, n, cols.size * o)
    return y, cols


def conv_backward_split(g: Any, cols: Any, wm: Any, padded_shape: tuple[int, int, int, int], k: tuple[int, int],
                        s: tuple[int, int], d: tuple[int, int], out: tuple[int, int], need_x: bool,
                        need_w: bool) -> tuple[Any, Any]:
    """(dxpad (N, Hp, Wp, C) or None, dW (O, K) or None) from g (N*Ho*Wo, O) C-contiguous: each thread runs
    its images' patch-gradient GEMM and col2im, and its part of dW = g^T cols (partials summed)."""
    n, hp, wp, c = padded_shape
    per = out[0] * out[1]
    gpad = numpy.empty(padded_shape, g.dtype) if need_x else None

    def part(lo: int, hi: int) -> Any:
        r = slice(lo * per, hi * per)
        gw = g[r].T @ cols[0, r] if need_w else None
        if need_x:
            _col2im_serial(g[r] @ wm, gpad[lo:hi].reshape(hi - lo, hp, wp * c), out[0], out[1], k[0], k[1] * c,
                           s[0], s[1], d[0], c)
        return gw

    parts = _threads.run(part, n, g.size * (wm.shape[1] if wm is not None else cols.shape[2]))
    gw = None
    if need_w:
        gw = parts[0]
        for p in parts[1:]:
            gw += p
    return gpad, gw
