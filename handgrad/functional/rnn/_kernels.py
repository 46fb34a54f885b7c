"""Compiled (numba) element-wise passes of one LSTM / GRU time step: everything after the recurrent GEMM, fused.

The NumPy code in ``lstm_sequence.py`` / ``gru_sequence.py`` is the reference and the fallback (other devices,
numba absent, or ``HANDGRAD_NUMBA=0``); these kernels compute the same buffers with the same pre-scaled
conventions (see those modules' docstrings), in one pass over a step's (n, G*H) rows instead of ~15 NumPy
calls each re-reading the arrays. ``lstm_infer`` / ``gru_infer`` are the no-grad steps (nothing kept for a
backward, the gates never written back). ``tests/test_recurrent_kernels.py`` runs both paths on the same inputs.

Why a hand-written exp: numba calls libm's scalar ``exp`` (no SVML here), about 4x slower than NumPy's
SIMD ``exp``. ``_exp`` below is the Cephes range reduction ``x = k ln2 + r``, a polynomial in r and ``2^k``
built from the exponent bits; it has no calls or branches, so LLVM vectorises the loops that use it.
float32: Cephes' degree-5 minimax polynomial (about 1 ulp); float64: the degree-13 Taylor series on
|r| <= ln2/2 (truncation < 1e-17 relative). Inputs are clamped to the finite range, so ``1 / (1 + exp(x))``
underflows to ~1e-38 (float32) or ~1e-308 (float64) where NumPy gives exactly 0: irrelevant next to 1.

Compiled with ``cache=True`` (no compile cost after the first run, see README). ``ENABLED`` is False when numba
cannot be imported or ``HANDGRAD_NUMBA=0``; the ops then use the NumPy code.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

ENABLED = os.environ.get("HANDGRAD_NUMBA", "1") != "0"
if ENABLED:  # HANDGRAD_NUMBA=0 does not even import numba (~0.5 s)
    try:
        from numba import njit, types
        from numba.extending import intrinsic, overload
    except ImportError:  # pragma: no cover - numba is a run-time dependency; the NumPy path must still work
        ENABLED = False


def usable(xp: Any, *arrays: Any) -> bool:
    """The compiled path applies: NumPy arrays, float32/float64, C-contiguous."""
    return ENABLED and xp is numpy and all(a.dtype in (numpy.float32, numpy.float64) and a.flags.c_contiguous
                                           for a in arrays)


if ENABLED:

    @intrinsic
    def _bits_to_float(typingctx, k):  # noqa: N805 - numba's intrinsic signature
        """Reinterpret an int32 (int64) as a float32 (float64): builds 2^k from exponent bits, vectorisable."""
        out = types.float32 if k.bitwidth == 32 else types.float64

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(out))

        return out(k), codegen

    @njit(cache=True, inline="always", error_model="numpy")
    def _exp32(x):
        x = min(max(x, numpy.float32(-87.0)), numpy.float32(88.0))
        k = numpy.floor(x * numpy.float32(1.44269504088896341) + numpy.float32(0.5))
        r = x - k * numpy.float32(0.693359375) - k * numpy.float32(-2.12194440e-4)
        p = numpy.float32(1.9875691500e-4)
        p = p * r + numpy.float32(1.3981999507e-3)
        p = p * r + numpy.float32(8.3334519073e-3)
        p = p * r + numpy.float32(4.1665795894e-2)
        p = p * r + numpy.float32(1.6666665459e-1)
        p = p * r + numpy.float32(5.0000001201e-1)
        p = p * r * r + r + numpy.float32(1.0)
        return p * _bits_to_float(numpy.int32((numpy.int64(k) + 127) << 23))

    @njit(cache=True, inline="always", error_model="numpy")
    def _exp64(x):
        x = min(max(x, -708.0), 709.0)
        k = numpy.floor(x * 1.4426950408889634 + 0.5)
        r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r * r + r + 1.0
        return p * _bits_to_float((numpy.int64(k) + 1023) << 52)

    def _exp(x):  # the dtype-generic exp of the kernels: _exp32 or _exp64, chosen at compile time
        raise NotImplementedError

    @overload(_exp, inline="always")
    def _exp_impl(x):
        if isinstance(x, types.Float) and x.bitwidth == 32:
            return lambda x: _exp32(x)
        return lambda x: _exp64(x)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_fwd(s, r, cp, c, tc, g, h):
        """s (n,4H) += r, then sigmoids in place; g, c, tanh(c), h (n,H) written (see lstm_sequence)."""
        n, H = c.shape
        one = s.dtype.type(1.0)
        two = s.dtype.type(2.0)
        for b in range(n):
            sb, rb = s[b], r[b]
            for j in range(4 * H):
                sb[j] = one / (one + _exp(sb[j] + rb[j]))
            for j in range(H):
                gg = two * sb[2 * H + j] - one
                cc = sb[H + j] * cp[b, j] + sb[j] * gg
                t = two / (one + _exp(-two * cc)) - one
                g[b, j] = gg
                c[b, j] = cc
                tc[b, j] = t
                h[b, j] = sb[3 * H + j] * t

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer(s, r, c, h):
        """No-grad step: c (n,H) <- f c + i g in place, h (n,H) = o tanh(c); s, r (n,4H) only read.

        One pass, nothing kept for a backward: the four gates of unit j are read at j, H+j, 2H+j, 3H+j
        (four contiguous streams, so the j loop still vectorises) and never written back."""
        n, H = c.shape
        one = s.dtype.type(1.0)
        two = s.dtype.type(2.0)
        H2, H3 = 2 * H, 3 * H
        for b in range(n):
            sb, rb, cb, hb = s[b], r[b], c[b], h[b]
            for j in range(H):
                i = one / (one + _exp(sb[j] + rb[j]))
                f = one / (one + _exp(sb[H + j] + rb[H + j]))
                gg = two / (one + _exp(sb[H2 + j] + rb[H2 + j])) - one
                o = one / (one + _exp(sb[H3 + j] + rb[H3 + j]))
                cc = f * cb[j] + i * gg
                cb[j] = cc
                hb[j] = o * (two / (one + _exp(-two * cc)) - one)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_bwd(s, tc, h, g, cp, dh, dc, dz):
        """One BPTT step's element-wise part: dz (n,4H) (g column at 1/4), dc <- dc_{t-1} in place."""
        n, H = dh.shape
        one = s.dtype.type(1.0)
        for b in range(n):
            sb, zb = s[b], dz[b]
            for j in range(H):
                d = dh[b, j]
                t = tc[b, j]
                i = sb[j]
                f = sb[H + j]
                sg = sb[2 * H + j]
                o = sb[3 * H + j]
                dct = dc[b, j] + (o - h[b, j] * t) * d
                zb[j] = dct * g[b, j] * i * (one - i)
                zb[H + j] = dct * cp[b, j] * f * (one - f)
                zb[2 * H + j] = dct * i * sg * (one - sg)
                zb[3 * H + j] = d * t * o * (one - o)
                dc[b, j] = dct * f

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_fwd(g, r, b_hn, hn, hp, h):
        """g (n,3H) += r on [r, z] then sigmoids, n = tanh in g[:, 2H:]; hn = r_n + b_hn; h written."""
        n, H = h.shape
        one = g.dtype.type(1.0)
        two = g.dtype.type(2.0)
        for b in range(n):
            gb, rb = g[b], r[b]
            for j in range(2 * H):
                gb[j] = one / (one + _exp(gb[j] + rb[j]))
            for j in range(H):
                v = rb[2 * H + j] + b_hn[j]
                hn[b, j] = v
                a = two / (one + _exp(gb[2 * H + j] + gb[j] * v)) - one
                gb[2 * H + j] = a
                h[b, j] = a + gb[H + j] * (hp[b, j] - a)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_infer(g, r, b_hn, hp, h):
        """No-grad step: h (n,H) from g, r (n,3H) (only read) and h_{t-1} = hp; nothing kept for a backward."""
        n, H = h.shape
        one = g.dtype.type(1.0)
        two = g.dtype.type(2.0)
        H2 = 2 * H
        for b in range(n):
            gb, rb, pb, hb = g[b], r[b], hp[b], h[b]
            for j in range(H):
                rr = one / (one + _exp(gb[j] + rb[j]))
                z = one / (one + _exp(gb[H + j] + rb[H + j]))
                a = two / (one + _exp(gb[H2 + j] + rr * (rb[H2 + j] + b_hn[j]))) - one
                hb[j] = a + z * (pb[j] - a)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_bwd(g, hn, hp, dh, dx, dhh, carry):
        """dGx, dGh rows (n,3H) of one step and carry = dh * z (the direct part of dh_{t-1})."""
        n, H = dh.shape
        one = g.dtype.type(1.0)
        half = g.dtype.type(-0.5)
        for b in range(n):
            gb = g[b]
            for j in range(H):
                d = dh[b, j]
                r = gb[j]
                z = gb[H + j]
                nn = gb[2 * H + j]
                da = d * (one - nn * nn) * (one - z)
                dzz = d * (hp[b, j] - nn) * z * (one - z)
                dr = da * hn[b, j] * half * r * (one - r)
                dx[b, j] = dr
                dx[b, H + j] = dzz
                dx[b, 2 * H + j] = da
                dhh[b, j] = dr
                dhh[b, H + j] = dzz
                dhh[b, 2 * H + j] = da * r
                carry[b, j] = d * z
