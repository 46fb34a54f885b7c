"""Convolution by shifted outputs ("kn2row"), for layers with fewer output channels than input channels.

im2col copies every input pixel kh*kw times into the patch matrix (Ho*Wo rows of kh*kw*C values per image) and
then runs a GEMM whose output is only O wide. When O < C it moves fewer bytes to multiply first and shift after.
With Xp the padded channels-last input as rows (N*Hp*Wp, C) and the weight as Wk (C, kh*kw*O),
``Wk[c, (p*kw + q)*O + o] = w[o, c, p, q]``:

    Z = Xp Wk                                                        (N, Hp, Wp, kh*kw*O), one GEMM
    y[n, i, j, o] = b[o] + sum_{p, q} Z[n, i*sh + p*dh, j*sw + q*dw, (p*kw + q)*O + o]

and the VJPs, with gZ holding gy at the positions the forward read (zero elsewhere; for one (p, q) the map
(i, j) -> (i*sh + p*dh, j*sw + q*dw) is one-to-one, so this is a scatter, not a scatter-add):

    gZ[n, i*sh + p*dh, j*sw + q*dw, (p*kw + q)*O + o] = gy[n, i, j, o]
    dXp = gZ Wk^T,     dWk = Xp^T gZ.

Z has Hp*Wp*kh*kw*O values per image against im2col's Ho*Wo*kh*kw*C, and the GEMM does Hp*Wp/(Ho*Wo) times
im2col's multiply-adds, so ``usable`` takes it for stride 1 (where that ratio is near 1) and O < C. A 3x3 conv
32 -> 8 channels at 28x28, batch 64 (MSDNet's dense units), forward + backward: 63 ms by im2col, BENCHMARKS.md
for this path. Float32 only, like Winograd: the sum over (p, q) is taken in another order than im2col's GEMM,
and float64 keeps the im2col path, whose results equal PyTorch's. ``tests/test_functional_cnn_kn2row.py``
compares it with im2col and PyTorch (float64 forced on) and gradchecks it.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels as _rnn_kernels

DTYPES: tuple[Any, ...] = (numpy.float32,)
# Z (and gZ) are made a few images at a time into one buffer of about this size, read back while still in
# cache (the L2 of one core is 1-2 MB on the machines measured). Measured inside MSDNet's training step (Intel
# Xeon, 1 thread, where the step is memory-bound): the 3x3 conv 32 -> 8 at 28x28, batch 64, forward 11.1 ->
# 5.8 ms and backward 10.2 -> 7.3 ms; the whole step 530-533 -> 510-515 ms against Z for the whole batch at once
CHUNK_BYTES = 1 << 19

njit = None
if _rnn_kernels.ENABLED:
    try:
        from numba import njit
    except ImportError:  # pragma: no cover
        njit = None


def usable(xp: Any, x: Any, w_shape: tuple[int, ...], stride: tuple[int, int], groups: int) -> bool:
    """kn2row applies: NumPy, numba on, a listed dtype, no groups, stride 1, a kernel larger than 1x1 and fewer
    output than input channels (Z is then smaller than the patch matrix)."""
    o, c, kh, kw = w_shape
    return (_rnn_kernels.ENABLED and njit is not None and xp is numpy and x.dtype in DTYPES and groups == 1
            and stride == (1, 1) and kh * kw > 1 and o < c)


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _gather(z, y, kh, kw, sh, sw, dh, dw, lo, hi):
        o = y.shape[3]
        for b in range(lo, hi):
            for i in range(y.shape[1]):
                for j in range(y.shape[2]):
                    acc = y[b, i, j]
                    for e in range(o):
                        acc[e] = 0
                    for p in range(kh):
                        zr = z[b, i * sh + p * dh]
                        for q in range(kw):
                            src = zr[j * sw + q * dw]
                            off = (p * kw + q) * o
                            for e in range(o):
                                acc[e] += src[off + e]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _scatter(gy, gz, kh, kw, sh, sw, dh, dw, lo, hi):
        o = gy.shape[3]
        for b in range(lo, hi):
            gz[b] = 0
            for i in range(gy.shape[1]):
                for j in range(gy.shape[2]):
                    g = gy[b, i, j]
                    for p in range(kh):
                        zr = gz[b, i * sh + p * dh]
                        for q in range(kw):
                            dst = zr[j * sw + q * dw]
                            off = (p * kw + q) * o
                            for e in range(o):
                                dst[off + e] = g[e]


def weight_matrix(w: Any) -> Any:
    """Wk (C, kh*kw*O) from the conv weight (O, C, kh, kw)."""
    o, c, kh, kw = w.shape
    return numpy.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c, kh * kw * o))


def weight_from_matrix(dwk: Any, w_shape: tuple[int, ...]) -> Any:
    """The inverse of ``weight_matrix``: dWk (C, kh*kw*O) back to (O, C, kh, kw)."""
    o, c, kh, kw = w_shape
    return dwk.reshape(c, kh, kw, o).transpose(3, 0, 1, 2)


def chunk_images(hp: int, wp: int, kko: int, itemsize: int) -> int:
    """Images per chunk of Z: about ``CHUNK_BYTES`` of it, so that it is still in cache when the gather (scatter)
    reads (fills) it instead of going to memory and back (measured below)."""
    return max(1, CHUNK_BYTES // (hp * wp * kko * itemsize))


def forward(xpad: Any, wk: Any, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
            out: tuple[int, int]) -> Any:
    """y (N, Ho, Wo, O) from the C-contiguous padded input xpad (N, Hp, Wp, C) and Wk (C, kh*kw*O); the batch
    is split over ``_threads`` (each thread: its images' GEMM rows and gather, a few images at a time into one
    cache-sized Z buffer)."""
    n, hp, wp, c = xpad.shape
    kko = wk.shape[1]
    o = kko // (k[0] * k[1])
    y = numpy.empty((n, out[0], out[1], o), xpad.dtype)
    cb = chunk_images(hp, wp, kko, xpad.itemsize)

    def part(lo: int, hi: int) -> None:
        z = numpy.empty((min(cb, hi - lo), hp, wp, kko), xpad.dtype)
        for b0 in range(lo, hi, cb):
            m = min(cb, hi - b0)
            numpy.matmul(xpad[b0:b0 + m].reshape(-1, c), wk, out=z[:m].reshape(-1, kko))
            _gather(z, y[b0:b0 + m], k[0], k[1], s[0], s[1], d[0], d[1], 0, m)

    _threads.run(part, n, n * hp * wp * kko * c)
    return y


def backward(gy: Any, xpad: Any, wk: Any, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
             need_x: bool, need_w: bool) -> tuple[Any, Any]:
    """(dxpad (N, Hp, Wp, C) or None, dWk (C, kh*kw*O) or None) from gy (N, Ho, Wo, O) C-contiguous; the batch
    is split over ``_threads`` (dWk summed from per-thread partials), each thread's images a few at a time
    through one cache-sized gZ buffer."""
    n, hp, wp, c = xpad.shape
    kko = wk.shape[1]
    gxpad = numpy.empty(xpad.shape, gy.dtype) if need_x else None
    cb = chunk_images(hp, wp, kko, gy.itemsize)
    wk_t = wk.T

    def part(lo: int, hi: int) -> Any:
        gz = numpy.empty((min(cb, hi - lo), hp, wp, kko), gy.dtype)
        dwk = numpy.zeros((c, kko), gy.dtype) if need_w else None
        for b0 in range(lo, hi, cb):
            m = min(cb, hi - b0)
            _scatter(gy[b0:b0 + m], gz, k[0], k[1], s[0], s[1], d[0], d[1], 0, m)
            rows = gz[:m].reshape(-1, kko)
            if need_x:
                numpy.matmul(rows, wk_t, out=gxpad[b0:b0 + m].reshape(-1, c))
            if need_w:
                dwk += xpad[b0:b0 + m].reshape(-1, c).T @ rows
        return dwk

    parts = _threads.run(part, n, n * hp * wp * kko * c)
    dwk = None
    if need_w:
        dwk = parts[0]
        for p in parts[1:]:
            dwk += p
    return gxpad, dwk
