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

``gemm_packed`` is the float32 recurrent GEMM of the LSTM/GRU (no-grad: ``lstm_infer_rows`` / ``gru_infer_rows``;
training forward and BPTT: called per step from the sequence ops) and the no-grad input projection: the
weight is packed once per sequence into blocks of 32 columns (``pack_columns``), and an LLVM-IR micro-kernel
(``_panel``) keeps an 8 x 32 block of the result in 16 AVX-512 registers over k. OpenBLAS re-packs ``W_hh`` on
every one of the T small GEMMs; measured at T100 B32 H256, 100 GEMMs take 14.8 ms here against 27 ms
(BENCHMARKS.md, RNN run E). ``HANDGRAD_PACKED_GEMM=0`` returns all of them to ``numpy.matmul``.

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
        from llvmlite import ir
        from numba import njit, types
        from numba.core import cgutils
        from numba.extending import intrinsic, overload
    except ImportError:  # pragma: no cover - numba is a run-time dependency; the NumPy path must still work
        ENABLED = False


PACKED = os.environ.get("HANDGRAD_PACKED_GEMM", "1") != "0"  # 0: the LSTM/GRU use numpy.matmul again
if PACKED and ENABLED:  # 16 accumulators of 16 float32 lanes: only AVX-512 has the registers (32 zmm)
    try:
        from llvmlite.binding import get_host_cpu_features

        PACKED = bool(get_host_cpu_features().get("avx512f", False))
    except Exception:  # pragma: no cover - feature detection unavailable: keep the BLAS
        PACKED = False
PANEL = 32  # columns of one packed block of W: two 16-lane float32 vectors (see _panel)


def packable(xp: Any, w: Any) -> bool:
    """The packed recurrent GEMM applies to ``W_hh^T (H, N)``: compiled path, AVX-512, float32, N a multiple of
    PANEL (``PACKED`` is False without AVX-512 or with ``HANDGRAD_PACKED_GEMM=0``).

    float32 only: measured (1 thread, OpenBLAS SkylakeX on Zen 4) 100 (32, 256) x (256, 1024) GEMMs take
    14.5 ms packed against 27 ms in ``numpy.matmul``; in float64 the gain was 0-20% and at 16 rows a loss."""
    return PACKED and ENABLED and xp is numpy and w.dtype == numpy.float32 and w.shape[-1] % PANEL == 0


def pack_columns(w_t: Any) -> Any:
    """``W (K, N)`` -> ``(N / PANEL, K, PANEL)``: each block of PANEL columns contiguous over k, read once per
    row block by ``_panel`` (done once per sequence; OpenBLAS re-packs ``W`` on every one of the T GEMMs)."""
    K, N = w_t.shape
    return numpy.ascontiguousarray(w_t.reshape(K, N // PANEL, PANEL).transpose(1, 0, 2))


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

    def _panel(MR: int):  # noqa: N803 - the GEMM literature's name for the register block's rows
        """An intrinsic: ``out[b0:b0+MR, col:col+PANEL] = h[b0:b0+MR, :K] @ P[blk]`` (float32, C-contiguous).

        Written in LLVM IR because numba's auto-vectoriser leaves the register-blocked loop scalar (measured
        10x slower than OpenBLAS): MR x 2 accumulators of 16 lanes (stack slots that LLVM promotes to
        registers), per k two vector loads of the packed block, MR broadcasts of ``h[b, k]`` and 2 MR fused
        multiply-adds (``llvm.fma``: one rounding, like OpenBLAS's kernels; only the summation order differs).
        """

        @intrinsic
        def panel(typingctx, h, p, out, b0, blk, K):  # noqa: N803, N805 - numba's intrinsic signature
            def codegen(context, builder, sig, args):
                h_, p_, out_, b0_, blk_, k_n = args
                ety = context.get_value_type(sig.args[0].dtype)
                vty = ir.VectorType(ety, 16)
                i64 = ir.IntType(64)
                hp = context.make_array(sig.args[0])(context, builder, h_).data
                pp = context.make_array(sig.args[1])(context, builder, p_).data
                oarr = context.make_array(sig.args[2])(context, builder, out_)
                op = oarr.data
                ldo = cgutils.unpack_tuple(builder, oarr.shape, 2)[1]
                fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
                zero = ir.Constant(vty, [ir.Constant(ety, 0.0)] * 16)
                acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(MR)]
                base = builder.mul(builder.mul(blk_, k_n), ir.Constant(i64, PANEL))
                c = lambda v: ir.Constant(i64, v)  # noqa: E731
                vptr = lambda base, at: builder.bitcast(builder.gep(base, [at]), vty.as_pointer())  # noqa: E731
                with cgutils.for_range(builder, k_n) as loop:
                    k = loop.index
                    wo = builder.add(base, builder.mul(k, c(PANEL)))
                    w = []
                    for v in range(2):
                        ld = builder.load(vptr(pp, builder.add(wo, c(16 * v))))
                        ld.align = 4
                        w.append(ld)
                    for i in range(MR):
                        x = builder.load(builder.gep(hp, [builder.add(builder.mul(builder.add(b0_, c(i)), k_n), k)]))
                        xv = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
                        xv = builder.shuffle_vector(xv, ir.Constant(vty, ir.Undefined),
                                                    ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
                        for v in range(2):
                            builder.store(builder.call(fma, [xv, w[v], builder.load(acc[i][v])]), acc[i][v])
                col = builder.mul(blk_, c(PANEL))
                for i in range(MR):
                    row = builder.add(builder.mul(builder.add(b0_, c(i)), ldo), col)
                    for v in range(2):
                        st = builder.store(builder.load(acc[i][v]), vptr(op, builder.add(row, c(16 * v))))
                        st.align = 4
                return context.get_dummy_value()

            return types.void(h, p, out, types.int64, types.int64, types.int64), codegen

        return panel

    _panel8, _panel4, _panel1 = _panel(8), _panel(4), _panel(1)

    @njit(cache=True, nogil=True)
    def gemm_packed(h, p, out):
        """out (n, N) = h (n, K) @ W (K, N), W given as ``pack_columns(W)``; all float32, C-contiguous.

        Rows in blocks of 8 (16 accumulator registers), then 4, then 1; each packed block of W (K x 32, 32 KB at
        K = 256) stays in L2 across the row blocks."""
        n, K = h.shape
        nblk = p.shape[0]
        b0 = 0
        while b0 + 8 <= n:
            for j in range(nblk):
                _panel8(h, p, out, b0, j, K)
            b0 += 8
        while b0 + 4 <= n:
            for j in range(nblk):
                _panel4(h, p, out, b0, j, K)
            b0 += 4
        while b0 < n:
            for j in range(nblk):
                _panel1(h, p, out, b0, j, K)
            b0 += 1

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

    _gemm_packed = gemm_packed  # the name compiled kernels bind (tests may wrap the public one)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer_packed(s, hp, p, r, c, h):
        """``lstm_infer`` after the packed recurrent GEMM ``r = hp @ W_hh^T`` (one call per step)."""
        _gemm_packed(hp, p, r)
        lstm_infer(s, r, c, h)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer_rows(S, Hs, p, R, c, sizes, lo, hi):
        """The whole no-grad recurrence of batch rows [lo, hi): ``lstm_infer_packed`` for t = 0, 1, ... while
        ``sizes[t]`` (non-increasing) > lo; one call per sequence instead of one per step (~10 us each)."""
        for t in range(S.shape[0]):
            n = min(sizes[t], hi)
            if n <= lo:
                break
            lstm_infer_packed(S[t, lo:n], Hs[t, lo:n], p, R[lo:n], c[lo:n], Hs[t + 1, lo:n])

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
    def gru_infer_rows(G, Hs, p, R, b_hn, sizes, lo, hi):
        """The whole no-grad GRU recurrence of batch rows [lo, hi): packed GEMM + ``gru_infer`` per step."""
        for t in range(G.shape[0]):
            n = min(sizes[t], hi)
            if n <= lo:
                break
            r = R[lo:n]
            _gemm_packed(Hs[t, lo:n], p, r)
            gru_infer(G[t, lo:n], r, b_hn, Hs[t, lo:n], Hs[t + 1, lo:n])

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
