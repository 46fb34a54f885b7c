"""Winograd F(2x2, 3x3) convolution (Lavin & Gray 2016) for 3x3, stride-1, undilated, ungrouped conv2d.

Each 2x2 output tile is computed from a 4x4 input tile d (tiles step by 2, so neighbours overlap by 2) as

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A        ((.) elementwise over the 4x4 "Winograd points")

with g the 3x3 filter and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

Summing over input channels turns the elementwise product into 16 GEMMs, one per point (xi, nu):
M[xi nu] (T, O) = V[xi nu] (T, C) U[xi nu] (C, O), T = N * tiles: 16 multiplies per 4 outputs where im2col
needs 36, so 2.25x fewer GEMM flops; the transforms are cheap element-wise passes (numba kernels below).
The VJPs follow by the chain rule through the same linear maps:

    dM = A dY A^T,   dV = dM U^T,   dU = V^T dM,   dd = B dV B^T (scatter-added over overlapping tiles),
    dg = G^T dU G.

Used by ``conv.Conv2dFunction`` for float32 (``DTYPES``) when numba is enabled; the im2col path is the
reference (and the path for float64, where it is bit-for-bit what it was). Winograd's sums differ from the
direct ones by rounding only: ``tests/test_functional_cnn_winograd.py`` compares it with PyTorch and im2col
(float64 and float32) and gradchecks it.
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

DTYPES: tuple[Any, ...] = (numpy.float32,)  # float64 keeps the im2col path (tests add float64 to check it)
MIN_CHANNELS = 16  # below this the transforms cost more than the GEMM flops they save

_G = numpy.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def usable(xp: Any, x: Any, w_shape: tuple[int, ...], stride: tuple[int, int], dilation: tuple[int, int],
           groups: int) -> bool:
    """Winograd applies: NumPy, numba on, a listed dtype, 3x3, stride 1, no dilation, no groups, enough channels."""
    return (_rnn_kernels.ENABLED and njit is not None and xp is numpy and x.dtype in DTYPES and groups == 1
            and tuple(w_shape[2:]) == (3, 3) and stride == (1, 1) and dilation == (1, 1)
            and min(w_shape[0], w_shape[1]) >= MIN_CHANNELS)


if njit is not None:

    @njit(cache=True, nogil=True, error_model="numpy")
    def _input_transform(xp_, v, th, tw, nc):
        """v[(xi, nu), t, c] = (B^T d B)[xi, nu] for the 4x4 tile d of tile t = (n, ti, tj); xp_ (N, Hq, Wq*C).

        Each tile is transformed into a small (16, C) buffer first and then copied out plane by plane: with 16
        output planes written in one loop LLVM would not vectorise it (too many possibly-aliasing pointers)."""
        nb = xp_.shape[0]
        tmp = numpy.empty((16, nc), v.dtype)
        for n in range(nb):
            for ti in range(th):
                for tj in range(tw):
                    t = (n * th + ti) * tw + tj
                    r0, r1, r2, r3 = xp_[n, 2 * ti], xp_[n, 2 * ti + 1], xp_[n, 2 * ti + 2], xp_[n, 2 * ti + 3]
                    j = 2 * tj * nc
                    for c in range(nc):
                        # rows: B^T d (4x4, columns s = 0..3)
                        a0 = r0[j + c] - r2[j + c]
                        a1 = r0[j + nc + c] - r2[j + nc + c]
                        a2 = r0[j + 2 * nc + c] - r2[j + 2 * nc + c]
                        a3 = r0[j + 3 * nc + c] - r2[j + 3 * nc + c]
                        b0 = r1[j + c] + r2[j + c]
                        b1 = r1[j + nc + c] + r2[j + nc + c]
                        b2 = r1[j + 2 * nc + c] + r2[j + 2 * nc + c]
                        b3 = r1[j + 3 * nc + c] + r2[j + 3 * nc + c]
                        e0 = r2[j + c] - r1[j + c]
                        e1 = r2[j + nc + c] - r1[j + nc + c]
                        e2 = r2[j + 2 * nc + c] - r1[j + 2 * nc + c]
                        e3 = r2[j + 3 * nc + c] - r1[j + 3 * nc + c]
                        f0 = r1[j + c] - r3[j + c]
                        f1 = r1[j + nc + c] - r3[j + nc + c]
                        f2 = r1[j + 2 * nc + c] - r3[j + 2 * nc + c]
                        f3 = r1[j + 3 * nc + c] - r3[j + 3 * nc + c]
                        # columns: (B^T d) B
                        tmp[0, c], tmp[1, c], tmp[2, c], tmp[3, c] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                        tmp[4, c], tmp[5, c], tmp[6, c], tmp[7, c] = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                        tmp[8, c], tmp[9, c], tmp[10, c], tmp[11, c] = e0 - e2, e1 + e2, e2 - e1, e1 - e3
                        tmp[12, c], tmp[13, c], tmp[14, c], tmp[15, c] = f0 - f2, f1 + f2, f2 - f1, f1 - f3
                    for k in range(16):
                        v[k, t, :] = tmp[k]

    @njit(cache=True, nogil=True, error_model="numpy")
    def _output_transform(m, y, th, tw):
        """y[n, 2ti + a, 2tj + b, o] = (A^T M A)[a, b] for tile t = (n, ti, tj), within y's bounds."""
        nb, ho, wo, no = y.shape
        for n in range(nb):
            for ti in range(th):
                for tj in range(tw):
                    t = (n * th + ti) * tw + tj
                    i0, j0 = 2 * ti, 2 * tj
                    full_i, full_j = i0 + 1 < ho, j0 + 1 < wo
                    for o in range(no):
                        # rows: A^T M (2x4)
                        p0 = m[0, t, o] + m[4, t, o] + m[8, t, o]
                        p1 = m[1, t, o] + m[5, t, o] + m[9, t, o]
                        p2 = m[2, t, o] + m[6, t, o] + m[10, t, o]
                        p3 = m[3, t, o] + m[7, t, o] + m[11, t, o]
                        q0 = m[4, t, o] - m[8, t, o] - m[12, t, o]
                        q1 = m[5, t, o] - m[9, t, o] - m[13, t, o]
                        q2 = m[6, t, o] - m[10, t, o] - m[14, t, o]
                        q3 = m[7, t, o] - m[11, t, o] - m[15, t, o]
                        y[n, i0, j0, o] = p0 + p1 + p2
                        if full_j:
                            y[n, i0, j0 + 1, o] = p1 - p2 - p3
                        if full_i:
                            y[n, i0 + 1, j0, o] = q0 + q1 + q2
                            if full_j:
                                y[n, i0 + 1, j0 + 1, o] = q1 - q2 - q3

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_output_transform(gy, dm, th, tw):
        """dm[(xi, nu), t, o] = (A dY A^T)[xi, nu] for the 2x2 tile dY of gy (zero past its bounds); staged
        through a (16, O) buffer like ``_input_transform``."""
        nb, ho, wo, no = gy.shape
        tmp = numpy.empty((16, no), gy.dtype)
        zrow = numpy.zeros(no, gy.dtype)
        for n in range(nb):
            for ti in range(th):
                for tj in range(tw):
                    t = (n * th + ti) * tw + tj
                    i0, j0 = 2 * ti, 2 * tj
                    full_i, full_j = i0 + 1 < ho, j0 + 1 < wo
                    q00 = gy[n, i0, j0]
                    q01 = gy[n, i0, j0 + 1] if full_j else zrow
                    q10 = gy[n, i0 + 1, j0] if full_i else zrow
                    q11 = gy[n, i0 + 1, j0 + 1] if full_i and full_j else zrow
                    for o in range(no):
                        g00, g01, g10, g11 = q00[o], q01[o], q10[o], q11[o]
                        # A dY: rows (g0., g0. + g1., g0. - g1., -g1.); then (.) A^T: (z0, z0 + z1, z0 - z1, -z1)
                        s0, s1 = g00 + g10, g01 + g11
                        d0, d1 = g00 - g10, g01 - g11
                        tmp[0, o], tmp[1, o], tmp[2, o], tmp[3, o] = g00, g00 + g01, g00 - g01, -g01
                        tmp[4, o], tmp[5, o], tmp[6, o], tmp[7, o] = s0, s0 + s1, s0 - s1, -s1
                        tmp[8, o], tmp[9, o], tmp[10, o], tmp[11, o] = d0, d0 + d1, d0 - d1, -d1
                        tmp[12, o], tmp[13, o], tmp[14, o], tmp[15, o] = -g10, -g10 - g11, g11 - g10, g11
                    for k in range(16):
                        dm[k, t, :] = tmp[k]

    @njit(cache=True, nogil=True, error_model="numpy", inline="always")
    def _bcol(v0, v1, v2, v3):
        """B v (= the adjoint of the B^T rows above) for one 4-vector."""
        return v0, v1 - v2 + v3, v1 + v2 - v0, -v3

    @njit(cache=True, nogil=True, error_model="numpy")
    def _grad_input_transform(dv, gx, th, tw, nc):
        """gx (zeroed here) += B dV B^T of every tile, at its 4x4 place (tiles overlap by 2)."""
        nb = gx.shape[0]
        tmp = numpy.empty((16, nc), dv.dtype)
        gx[:] = 0
        for n in range(nb):
            for ti in range(th):
                for tj in range(tw):
                    t = (n * th + ti) * tw + tj
                    r0, r1, r2, r3 = gx[n, 2 * ti], gx[n, 2 * ti + 1], gx[n, 2 * ti + 2], gx[n, 2 * ti + 3]
                    j = 2 * tj * nc
                    for k in range(16):  # staged: 16 input planes read in one loop would not vectorise
                        tmp[k] = dv[k, t, :]
                    for c in range(nc):
                        # B on the left, column by column: W[:, nu] = B dV[:, nu]
                        w00, w10, w20, w30 = _bcol(tmp[0, c], tmp[4, c], tmp[8, c], tmp[12, c])
                        w01, w11, w21, w31 = _bcol(tmp[1, c], tmp[5, c], tmp[9, c], tmp[13, c])
                        w02, w12, w22, w32 = _bcol(tmp[2, c], tmp[6, c], tmp[10, c], tmp[14, c])
                        w03, w13, w23, w33 = _bcol(tmp[3, c], tmp[7, c], tmp[11, c], tmp[15, c])
                        # B^T on the right, row by row, added at the tile's place
                        a0, a1, a2, a3 = _bcol(w00, w01, w02, w03)
                        r0[j + c] += a0
                        r0[j + nc + c] += a1
                        r0[j + 2 * nc + c] += a2
                        r0[j + 3 * nc + c] += a3
                        a0, a1, a2, a3 = _bcol(w10, w11, w12, w13)
                        r1[j + c] += a0
                        r1[j + nc + c] += a1
                        r1[j + 2 * nc + c] += a2
                        r1[j + 3 * nc + c] += a3
                        a0, a1, a2, a3 = _bcol(w20, w21, w22, w23)
                        r2[j + c] += a0
                        r2[j + nc + c] += a1
                        r2[j + 2 * nc + c] += a2
                        r2[j + 3 * nc + c] += a3
                        a0, a1, a2, a3 = _bcol(w30, w31, w32, w33)
                        r3[j + c] += a0
                        r3[j + nc + c] += a1
                        r3[j + 2 * nc + c] += a2
                        r3[j + 3 * nc + c] += a3


def _tiles(ho: int, wo: int) -> tuple[int, int]:
    return (ho + 1) // 2, (wo + 1) // 2


def filter_transform(w: Any) -> Any:
    """U (16, C, O) = G g G^T for every (o, c) of w (O, C, 3, 3)."""
    o, c = w.shape[:2]
    g = _G.astype(w.dtype)
    u = numpy.einsum("ap,ocpq,bq->abco", g, w, g, optimize=True)
    return numpy.ascontiguousarray(u.reshape(16, c, o))


def filter_grad(du: Any, w_shape: tuple[int, ...]) -> Any:
    """dg (O, C, 3, 3) = G^T dU G from dU (16, C, O)."""
    o, c = w_shape[:2]
    g = _G.astype(du.dtype)
    return numpy.ascontiguousarray(numpy.einsum("ap,abco,bq->ocpq", g, du.reshape(4, 4, c, o), g, optimize=True))


def padded_for_tiles(xpad: Any, ho: int, wo: int) -> Any:
    """xpad (N, Hp, Wp, C) extended with zeros at the bottom/right to the 2*tiles + 2 rows/columns the 4x4
    tiles read (C-contiguous)."""
    th, tw = _tiles(ho, wo)
    n, hp, wp, c = xpad.shape
    hq, wq = 2 * th + 2, 2 * tw + 2
    if (hq, wq) == (hp, wp) and xpad.flags.c_contiguous:
        return xpad
    out = numpy.zeros((n, hq, wq, c), xpad.dtype)
    out[:, :hp, :wp] = xpad
    return out


def forward(xq: Any, u: Any, ho: int, wo: int) -> tuple[Any, Any]:
    """y (N, Ho, Wo, O) and V (16, T, C) from the tile-padded input xq (N, 2th+2, 2tw+2, C) and U (16, C, O)."""
    n, _, _, c = xq.shape
    th, tw = _tiles(ho, wo)
    v = numpy.empty((16, n * th * tw, c), xq.dtype)
    _input_transform(xq.reshape(n, xq.shape[1], -1), v, th, tw, c)
    m = numpy.matmul(v, u)  # 16 GEMMs (T, C) x (C, O)
    y = numpy.empty((n, ho, wo, u.shape[2]), xq.dtype)
    _output_transform(m, y, th, tw)
    return y, v


def backward(gy: Any, v: Any, u: Any, xq_shape: tuple[int, ...], need_x: bool, need_w: bool) -> tuple[Any, Any]:
    """(d xq (N, 2th+2, 2tw+2, C) or None, dU (16, C, O) or None) from gy (N, Ho, Wo, O) C-contiguous."""
    n, ho, wo, o = gy.shape
    th, tw = _tiles(ho, wo)
    dm = numpy.empty((16, n * th * tw, o), gy.dtype)
    _grad_output_transform(gy, dm, th, tw)
    du = numpy.matmul(v.transpose(0, 2, 1), dm) if need_w else None  # 16 GEMMs (C, T) x (T, O)
    gxq = None
    if need_x:
        dv = numpy.matmul(dm, u.transpose(0, 2, 1))  # 16 GEMMs (T, O) x (O, C)
        gxq = numpy.empty(xq_shape, gy.dtype)
        _grad_input_transform(dv, gxq.reshape(xq_shape[0], xq_shape[1], -1), th, tw, xq_shape[3])
    return gxq, du
