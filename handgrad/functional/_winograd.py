"""Winograd convolution F(m x m, r x r) (Lavin & Gray 2016) for square, stride-1, undilated, ungrouped conv2d.

Each m x m output tile comes from an n x n input tile d, n = m + r - 1 (tiles step by m, so neighbours
overlap by r - 1), as

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A        ((.) elementwise over the n x n "Winograd points")

with g the r x r filter and A^T (m, n), G (n, r), B^T (n, n) the Cook-Toom matrices of n - 1 interpolation
points and the point at infinity (``cook_toom``). Summing over input channels turns the elementwise product
into n*n GEMMs, one per point: M[k] (T, O) = V[k] (T, C) U[k] (C, O), T = N * tiles, so a convolution costs
n^2 / m^2 multiplies per output instead of r^2: 2.25 (F(4x4, 3x3)) instead of 9, 4 (F(4x4, 5x5)) instead of
25. The transforms are cheap element-wise passes (numba kernels below). The VJPs follow by the chain rule
through the same linear maps:

    dM = A dY A^T,   dV = dM U^T,   dU = V^T dM,   dd = B dV B^T (added over overlapping tiles),
    dg = G^T dU G.

Used by ``conv.Conv2dFunction`` for float32 (``DTYPES``) when numba is enabled; the im2col path is the
reference (and the float64 path, bit for bit what it was). Winograd's sums differ from the direct ones by
rounding only: ``tests/test_functional_cnn_winograd.py`` compares it with PyTorch and im2col and gradchecks it.
"""

from __future__ import annotations

import os
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

# float64 keeps the im2col path (tests add float64 to check it)
DTYPES: tuple[Any, ...] = (numpy.float32,) if os.environ.get("HANDGRAD_WINOGRAD", "1") != "0" else ()
# below this the transforms cost more than the GEMM flops they save: fwd + bwd of a batch of 32 at 32x32, C = O,
# 1 thread: 3x3 at 8 channels 8.4 ms vs 5.6 for im2col, at 16 11.8 vs 15.0 (5x5 already wins at 8: 15.3 vs 19.0)
MIN_CHANNELS = 16
# kernel size r -> (output tile m, finite interpolation points). Larger tiles save more GEMM flops and cost
# float32 accuracy (max error / max |y| against float64; direct im2col 6-7e-7, PyTorch's float32 3.8e-7):
# * 3x3: F(4x4, 3x3), 2.25 multiplies per output instead of 9; (0, +-1, 1/2, -2) 2.5e-6 (+-2: 6.1e-6, +-1/2:
#   9.1e-6; F(2x2, 3x3): 3.4e-7). The ResNet block's 64 -> 64 conv, forward + backward, 1 thread: 60 ms CPU
#   against 83 for F(2x2, 3x3) and ~125 for im2col.
# * 5x5: F(4x4, 5x5), 4 multiplies per output instead of 25; (0, +-1, +-1/2, +-2) 5.8e-6. LeNet's conv2 (32 -> 64
#   channels, 8x8 output), forward + backward: 16-18 ms CPU against 37.6 for im2col; F(2x2, 5x5) (0, +-1, 1/2,
#   -2; 1.4e-6) gave only 30-35 ms (its 36 transform points per 4 outputs cost what the flops saved).
# HANDGRAD_WINOGRAD=0 keeps every convolution on the direct im2col path (the reference numbers).
TILES: dict[int, tuple[int, tuple[float, ...]]] = {
    3: (4, (0.0, 1.0, -1.0, 0.5, -2.0)),
    5: (4, (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0)),
}
F_2X2_5X5 = (2, (0.0, 1.0, -1.0, 0.5, -2.0))  # tested, not used (see above)


def cook_toom(m: int, r: int, points: tuple[float, ...]) -> tuple[Any, Any, Any]:
    """(A^T (m, n), G (n, r), B^T (n, n)) of F(m, r) for the n - 1 finite ``points`` and infinity (float64).

    A^T evaluates the output polynomial at the points, G the filter polynomial (divided by the Lagrange
    denominators); B^T is the one matrix that makes A^T [(G g) (.) (B^T d)] equal the correlation
    y_i = sum_k g_k d_{i+k} for all g, d: a linear system in B^T, solved exactly (residual checked)."""
    n = m + r - 1
    at, g = numpy.zeros((m, n)), numpy.zeros((n, r))
    for j, p in enumerate(points):
        f = numpy.prod([p - q for q in points[:j] + points[j + 1 :]])
        at[:, j] = [p**i for i in range(m)]
        g[j] = [p**k / f for k in range(r)]
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1.0
    coef = numpy.einsum("ij,jk->ikj", at, g).reshape(m * r, n)  # (i, k) x point j
    rhs = numpy.array([[1.0 if s == i + k else 0.0 for s in range(n)] for i in range(m) for k in range(r)])
    bt = numpy.round(numpy.linalg.lstsq(coef, rhs, rcond=None)[0] * 64) / 64  # dyadic: clean the solver's ulps
    if numpy.abs(coef @ bt - rhs).max() > 1e-12:  # pragma: no cover - a bad choice of points
        raise ValueError(f"winograd: points {points} give no exact F({m}, {r})")
    return at, g, bt


_MATRICES = {r: cook_toom(r_m[0], r, r_m[1]) for r, r_m in TILES.items()}


def usable(xp: Any, x: Any, w_shape: tuple[int, ...], stride: tuple[int, int], dilation: tuple[int, int],
           groups: int) -> bool:
    """Winograd applies: NumPy, numba on, a listed dtype, a square kernel of a listed size, stride 1, no
    dilation, no groups, enough channels."""
    return (_rnn_kernels.ENABLED and njit is not None and xp is numpy and x.dtype in DTYPES and groups == 1
            and w_shape[2] == w_shape[3] and w_shape[2] in TILES and stride == (1, 1) and dilation == (1, 1)
            and min(w_shape[0], w_shape[1]) >= MIN_CHANNELS)


# The kernels keep every index of their innermost loops a plain range variable and stage each tile through
# small local arrays: with computed offsets or 16-36 output planes written in one loop LLVM does not vectorise.
if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _input_transform(x, v, bt, m, th, tw, b0, b1):
        """v[a*n + b, t, :] = (B^T d B)[a, b] for the n x n tile d of tile t = (i, ti, tj) of x (N, Hq, Wq, C),
        images b0 <= i < b1."""
        n = bt.shape[0]
        nc = x.shape[3]
        t1 = numpy.empty((n, n, nc), v.dtype)
        t2 = numpy.empty((n, n, nc), v.dtype)
        for b in range(b0, b1):
            for ti in range(th):
                for tj in range(tw):
                    t = (b * th + ti) * tw + tj
                    t1[:] = 0
                    for a in range(n):  # rows: B^T d
                        for i in range(n):
                            f = bt[a, i]
                            if f != 0:
                                for s in range(n):
                                    for c in range(nc):
                                        t1[a, s, c] += f * x[b, m * ti + i, m * tj + s, c]
                    t2[:] = 0
                    for a in range(n):  # columns: (B^T d) B
                        for k in range(n):
                            for s in range(n):
                                f = bt[k, s]
                                if f != 0:
                                    for c in range(nc):
                                        t2[a, k, c] += f * t1[a, s, c]
                    for a in range(n):
                        for k in range(n):
                            for c in range(nc):
                                v[a * n + k, t, c] = t2[a, k, c]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _output_transform(mm, y, at, th, tw, b0, b1):
        """y[b, m*ti + i, m*tj + j, :] = (A^T M A)[i, j] of tile t, within y's bounds, images b0 <= b < b1."""
        m, n = at.shape
        _, ho, wo, no = y.shape
        t1 = numpy.empty((m, n, no), y.dtype)
        t2 = numpy.empty((m, m, no), y.dtype)
        for b in range(b0, b1):
            for ti in range(th):
                for tj in range(tw):
                    t = (b * th + ti) * tw + tj
                    t1[:] = 0
                    for i in range(m):  # rows: A^T M
                        for a in range(n):
                            f = at[i, a]
                            if f != 0:
                                for k in range(n):
                                    for c in range(no):
                                        t1[i, k, c] += f * mm[a * n + k, t, c]
                    t2[:] = 0
                    for i in range(m):  # columns: (A^T M) A
                        for j in range(m):
                            for k in range(n):
                                f = at[j, k]
                                if f != 0:
                                    for c in range(no):
                                        t2[i, j, c] += f * t1[i, k, c]
                    for i in range(min(m, ho - m * ti)):
                        for j in range(min(m, wo - m * tj)):
                            for c in range(no):
                                y[b, m * ti + i, m * tj + j, c] = t2[i, j, c]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_output_transform(gy, dm, at, th, tw, b0, b1):
        """dm[a*n + k, t, :] = (A dY A^T)[a, k] for the m x m tile dY of gy (zero past its bounds), images
        b0 <= b < b1."""
        m, n = at.shape
        _, ho, wo, no = gy.shape
        d = numpy.empty((m, m, no), gy.dtype)
        t1 = numpy.empty((n, m, no), gy.dtype)
        t2 = numpy.empty((n, n, no), gy.dtype)
        for b in range(b0, b1):
            for ti in range(th):
                for tj in range(tw):
                    t = (b * th + ti) * tw + tj
                    hi, wj = min(m, ho - m * ti), min(m, wo - m * tj)
                    if hi < m or wj < m:
                        d[:] = 0
                    for i in range(hi):
                        for j in range(wj):
                            for c in range(no):
                                d[i, j, c] = gy[b, m * ti + i, m * tj + j, c]
                    t1[:] = 0
                    for a in range(n):  # rows: A dY
                        for i in range(m):
                            f = at[i, a]
                            if f != 0:
                                for j in range(m):
                                    for c in range(no):
                                        t1[a, j, c] += f * d[i, j, c]
                    t2[:] = 0
                    for a in range(n):  # columns: (A dY) A^T
                        for k in range(n):
                            for j in range(m):
                                f = at[j, k]
                                if f != 0:
                                    for c in range(no):
                                        t2[a, k, c] += f * t1[a, j, c]
                    for a in range(n):
                        for k in range(n):
                            for c in range(no):
                                dm[a * n + k, t, c] = t2[a, k, c]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_input_transform(dv, gx, bt, m, th, tw, b0, b1):
        """gx[b0:b1] (N, Hq, Wq, C), zeroed here, += B dV B^T of every tile at its n x n place (tiles overlap);
        dv holds the tiles of images b0 <= b < b1 only."""
        n = bt.shape[0]
        nc = gx.shape[3]
        t1 = numpy.empty((n, n, nc), gx.dtype)
        t2 = numpy.empty((n, n, nc), gx.dtype)
        gx[b0:b1] = 0
        for b in range(b0, b1):
            for ti in range(th):
                for tj in range(tw):
                    t = ((b - b0) * th + ti) * tw + tj
                    t1[:] = 0
                    for i in range(n):  # rows: B dV
                        for a in range(n):
                            f = bt[a, i]
                            if f != 0:
                                for k in range(n):
                                    for c in range(nc):
                                        t1[i, k, c] += f * dv[a * n + k, t, c]
                    t2[:] = 0
                    for i in range(n):  # columns: (B dV) B^T
                        for s in range(n):
                            for k in range(n):
                                f = bt[k, s]
                                if f != 0:
                                    for c in range(nc):
                                        t2[i, s, c] += f * t1[i, k, c]
                    for i in range(n):
                        for s in range(n):
                            for c in range(nc):
                                gx[b, m * ti + i, m * tj + s, c] += t2[i, s, c]


def tiles(r: int, ho: int, wo: int) -> tuple[int, int, int, int]:
    """(tiles down, tiles across, rows, columns) of the tile-padded input for an (ho, wo) output."""
    m = TILES[r][0]
    th, tw = -(-ho // m), -(-wo // m)
    return th, tw, m * th + r - 1, m * tw + r - 1


def filter_transform(w: Any) -> Any:
    """U (n*n, C, O) = G g G^T for every (o, c) of w (O, C, r, r)."""
    o, c, r, _ = w.shape
    g = _MATRICES[r][1].astype(w.dtype)
    u = numpy.einsum("ap,ocpq,bq->abco", g, w, g, optimize=True)
    return numpy.ascontiguousarray(u.reshape(-1, c, o))


def filter_grad(du: Any, w_shape: tuple[int, ...]) -> Any:
    """dg (O, C, r, r) = G^T dU G from dU (n*n, C, O)."""
    o, c, r, _ = w_shape
    g = _MATRICES[r][1].astype(du.dtype)
    n = g.shape[0]
    return numpy.ascontiguousarray(numpy.einsum("ap,abco,bq->ocpq", g, du.reshape(n, n, c, o), g, optimize=True))


def forward(xq: Any, u: Any, r: int, ho: int, wo: int) -> tuple[Any, Any]:
    """y (N, Ho, Wo, O) and V (n*n, T, C) from the tile-padded input xq (N, Hq, Wq, C) and U (n*n, C, O); the
    batch is split over ``_threads`` (each thread: its images' transforms and GEMM rows)."""
    at, _, bt = (a.astype(xq.dtype) for a in _MATRICES[r])
    m = TILES[r][0]
    th, tw, _, _ = tiles(r, ho, wo)
    n, per = xq.shape[0], th * tw
    v = numpy.empty((u.shape[0], n * per, xq.shape[3]), xq.dtype)
    mm = numpy.empty((u.shape[0], n * per, u.shape[2]), xq.dtype)
    y = numpy.empty((n, ho, wo, u.shape[2]), xq.dtype)

    def part(lo: int, hi: int) -> None:
        _input_transform(xq, v, bt, m, th, tw, lo, hi)
        numpy.matmul(v[:, lo * per : hi * per], u, out=mm[:, lo * per : hi * per])  # n*n GEMMs (T, C) x (C, O)
        _output_transform(mm, y, at, th, tw, lo, hi)

    _threads.run(part, n, v.size * u.shape[2])
    return y, v


def backward(gy: Any, v: Any, u: Any, r: int, xq_shape: tuple[int, ...], need_x: bool,
             need_w: bool) -> tuple[Any, Any]:
    """(d xq (N, Hq, Wq, C) or None, dU (n*n, C, O) or None) from gy (N, Ho, Wo, O) C-contiguous; the batch is
    split over ``_threads`` (dU summed from per-thread partials)."""
    at, _, bt = (a.astype(gy.dtype) for a in _MATRICES[r])
    m = TILES[r][0]
    n, ho, wo, o = gy.shape
    th, tw, _, _ = tiles(r, ho, wo)
    per = th * tw
    dm = numpy.empty((u.shape[0], n * per, o), gy.dtype)
    gxq = numpy.empty(xq_shape, gy.dtype) if need_x else None

    def part(lo: int, hi: int) -> Any:
        t = slice(lo * per, hi * per)
        _grad_output_transform(gy, dm, at, th, tw, lo, hi)
        du = numpy.matmul(v[:, t].transpose(0, 2, 1), dm[:, t]) if need_w else None  # GEMMs (C, T) x (T, O)
        if need_x:
            dv = numpy.matmul(dm[:, t], u.transpose(0, 2, 1))  # GEMMs (T, O) x (O, C)
            _grad_input_transform(dv, gxq, bt, m, th, tw, lo, hi)
        return du

    parts = _threads.run(part, n, dm.size * u.shape[1])
    du = None
    if need_w:
        du = parts[0]
        for p in parts[1:]:
            du += p
    return gxq, du
