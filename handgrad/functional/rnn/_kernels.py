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


def pack_rows(w: Any) -> Any:
    """``pack_columns(W^T)`` from ``W (N, K)`` in one compiled pass (no transposed copy first): the recurrent
    weight ``W_hh (G*H, H)`` of ``h W_hh^T``. float32, N a multiple of PANEL (``packable(xp, W^T)``)."""
    N, K = w.shape
    out = numpy.empty((N // PANEL, K, PANEL), w.dtype)
    _pack_rows(numpy.ascontiguousarray(w), out)
    return out


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

    @intrinsic
    def _fma(typingctx, a, b, c):  # noqa: N805
        """``a * b + c`` with one rounding (``llvm.fma``; vectorised as ``vfmadd``), float32 arguments."""

        def codegen(context, builder, signature, args):
            ty = context.get_value_type(types.float32)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), "llvm.fma.f32")
            return builder.call(fn, args)

        return types.float32(types.float32, types.float32, types.float32), codegen

    @intrinsic
    def _pow2_32(typingctx, k):  # noqa: N805
        """2^k for a float32 k holding an integer in [-126, 127]: ``(int32(k) + 127) << 23`` as float32 bits, all
        in 32-bit lanes (numba's own integer arithmetic widens to int64: half the lanes per vector)."""

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            ki = builder.fptosi(args[0], i32)
            bits = builder.shl(builder.add(ki, ir.Constant(i32, 127)), ir.Constant(i32, 23))
            return builder.bitcast(bits, ir.FloatType())

        return types.float32(types.float32), codegen

    @njit(cache=True, inline="always", error_model="numpy")
    def _exp32(x):
        # the Horner steps and the range reduction as fused multiply-adds: about 9 of the ~30 vector operations
        # fewer (measured, 1 thread: the no-grad LSTM gate pass at B32 H256, 5 exps per unit, 26-29 -> 22-23 us),
        # and 2^k built in 32-bit lanes (_pow2_32: 22-23 -> 18.5-19 us); float64 keeps _exp64 unchanged
        x = min(max(x, numpy.float32(-87.0)), numpy.float32(88.0))
        k = numpy.floor(x * numpy.float32(1.44269504088896341) + numpy.float32(0.5))
        r = _fma(k, numpy.float32(-0.693359375), x)
        r = _fma(k, numpy.float32(2.12194440e-4), r)
        p = _fma(numpy.float32(1.9875691500e-4), r, numpy.float32(1.3981999507e-3))
        p = _fma(p, r, numpy.float32(8.3334519073e-3))
        p = _fma(p, r, numpy.float32(4.1665795894e-2))
        p = _fma(p, r, numpy.float32(1.6666665459e-1))
        p = _fma(p, r, numpy.float32(5.0000001201e-1))
        p = _fma(p * r, r, r) + numpy.float32(1.0)
        return p * _pow2_32(k)

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

    def _panel(MR: int, with_bias: bool = False):  # noqa: N803 - the GEMM literature's name for the block's rows
        """An intrinsic: ``out[b0:b0+MR, col:col+PANEL] = h[b0:b0+MR, :K] @ P[blk]`` (float32, C-contiguous);
        ``with_bias``: one more argument, a (N,) vector, the accumulators' start (``+ bias[col:col+PANEL]``).

        Written in LLVM IR because numba's auto-vectoriser leaves the register-blocked loop scalar (measured
        10x slower than OpenBLAS): MR x 2 accumulators of 16 lanes (stack slots that LLVM promotes to
        registers), per k two vector loads of the packed block, MR broadcasts of ``h[b, k]`` and 2 MR fused
        multiply-adds (``llvm.fma``: one rounding, like OpenBLAS's kernels; only the summation order differs).
        """

        def codegen(context, builder, sig, args):
            h_, p_, out_, b0_, blk_, k_n = args[:6]
            ety = context.get_value_type(sig.args[0].dtype)
            vty = ir.VectorType(ety, 16)
            i64 = ir.IntType(64)
            hp = context.make_array(sig.args[0])(context, builder, h_).data
            pp = context.make_array(sig.args[1])(context, builder, p_).data
            oarr = context.make_array(sig.args[2])(context, builder, out_)
            op = oarr.data
            ldo = cgutils.unpack_tuple(builder, oarr.shape, 2)[1]
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
            c = lambda v: ir.Constant(i64, v)  # noqa: E731
            vptr = lambda base, at: builder.bitcast(builder.gep(base, [at]), vty.as_pointer())  # noqa: E731
            col = builder.mul(blk_, c(PANEL))
            if with_bias:
                bp = context.make_array(sig.args[6])(context, builder, args[6]).data
                start = []
                for v in range(2):
                    ld = builder.load(vptr(bp, builder.add(col, c(16 * v))))
                    ld.align = 4
                    start.append(ld)
            else:
                start = [ir.Constant(vty, [ir.Constant(ety, 0.0)] * 16)] * 2
            acc = [[cgutils.alloca_once_value(builder, start[v]) for v in range(2)] for _ in range(MR)]
            base = builder.mul(builder.mul(blk_, k_n), ir.Constant(i64, PANEL))
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
            for i in range(MR):
                row = builder.add(builder.mul(builder.add(b0_, c(i)), ldo), col)
                for v in range(2):
                    st = builder.store(builder.load(acc[i][v]), vptr(op, builder.add(row, c(16 * v))))
                    st.align = 4
            return context.get_dummy_value()

        if with_bias:

            @intrinsic
            def panel_bias(typingctx, h, p, out, b0, blk, K, bias):  # noqa: N803, N805 - numba's signature
                return types.void(h, p, out, types.int64, types.int64, types.int64, bias), codegen

            return panel_bias

        @intrinsic
        def panel(typingctx, h, p, out, b0, blk, K):  # noqa: N803, N805 - numba's intrinsic signature
            return types.void(h, p, out, types.int64, types.int64, types.int64), codegen

        return panel

    _panel12, _panel8, _panel4, _panel1 = _panel(12), _panel(8), _panel(4), _panel(1)
    _panel12b, _panel8b, _panel4b, _panel1b = _panel(12, True), _panel(8, True), _panel(4, True), _panel(1, True)

    @njit(cache=True, nogil=True)
    def gemm_blocks(h, p, out, n_groups, stride, j0, j1):
        """``gemm_packed`` on some column blocks only: blocks ``g * stride + j`` for g < n_groups, j0 <= j < j1
        (one thread's hidden units of every gate when a recurrence is split over units, ``_unit_split``).

        Rows in blocks of 12 (24 of the 32 vector registers hold accumulators), then 8, 4, 1. Blocks of 8 were
        the first choice; 12 measured 6% faster on the 2-core Intel Xeon (BENCHMARKS.md, fourth pass): each
        load of the packed block feeds 24 fused multiply-adds instead of 16. Running the row blocks inside
        each column block instead is 0-3% slower at 16-64 rows and 20% slower for the input projection's 3,200
        rows (measured on the AMD EPYC, 1 thread)."""
        n, K = h.shape
        b0 = 0
        while b0 + 12 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel12(h, p, out, b0, j, K)
            b0 += 12
        while b0 + 8 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel8(h, p, out, b0, j, K)
            b0 += 8
        while b0 + 4 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel4(h, p, out, b0, j, K)
            b0 += 4
        while b0 < n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel1(h, p, out, b0, j, K)
            b0 += 1

    @njit(cache=True, nogil=True)
    def gemm_blocks_bias(h, p, bias, out, n_groups, stride, j0, j1):
        """``gemm_blocks`` plus ``bias[col]`` (N,): the bias is where the accumulators start."""
        n, K = h.shape
        b0 = 0
        while b0 + 12 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel12b(h, p, out, b0, j, K, bias)
            b0 += 12
        while b0 + 8 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel8b(h, p, out, b0, j, K, bias)
            b0 += 8
        while b0 + 4 <= n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel4b(h, p, out, b0, j, K, bias)
            b0 += 4
        while b0 < n:
            for g in range(n_groups):
                for j in range(g * stride + j0, g * stride + j1):
                    _panel1b(h, p, out, b0, j, K, bias)
            b0 += 1

    @njit(cache=True, nogil=True)
    def gemm_packed_bias(h, p, bias, out):
        """out (n, N) = h (n, K) @ W (K, N) + bias (N,), W given as ``pack_columns(W)``: the bias is where the
        accumulators start (the input projection needs no ``[X, 1]`` copy of its input)."""
        gemm_blocks_bias(h, p, bias, out, 1, 0, 0, p.shape[0])

    @njit(cache=True, nogil=True)
    def gemm_packed(h, p, out):
        """out (n, N) = h (n, K) @ W (K, N), W given as ``pack_columns(W)``; all float32, C-contiguous."""
        gemm_blocks(h, p, out, 1, 0, 0, p.shape[0])

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_fwd_units(s, r, cp, c, tc, g, h, u0, u1):
        """``lstm_fwd`` on hidden units [u0, u1) only (the gate columns q H + j of those units)."""
        n, H = c.shape
        m = u1 - u0
        one = s.dtype.type(1.0)
        two = s.dtype.type(2.0)
        for b in range(n):  # unit slices of each row: unit-stride loops over plain range indices vectorise
            for q in range(4):
                sq, rq = s[b, q * H + u0 : q * H + u1], r[b, q * H + u0 : q * H + u1]
                for j in range(m):
                    sq[j] = one / (one + _exp(sq[j] + rq[j]))
            si, sf, sg, so = (s[b, u0:u1], s[b, H + u0 : H + u1], s[b, 2 * H + u0 : 2 * H + u1],
                              s[b, 3 * H + u0 : 3 * H + u1])
            cpb, cb, tcb, gb, hb = cp[b, u0:u1], c[b, u0:u1], tc[b, u0:u1], g[b, u0:u1], h[b, u0:u1]
            for j in range(m):
                gg = two * sg[j] - one
                cc = sf[j] * cpb[j] + si[j] * gg
                t = two / (one + _exp(-two * cc)) - one
                gb[j] = gg
                cb[j] = cc
                tcb[j] = t
                hb[j] = so[j] * t

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_fwd(s, r, cp, c, tc, g, h):
        """s (n,4H) += r, then sigmoids in place; g, c, tanh(c), h (n,H) written (see lstm_sequence)."""
        lstm_fwd_units(s, r, cp, c, tc, g, h, 0, c.shape[1])

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer_units(s, r, c, h, u0, u1):
        """``lstm_infer`` on hidden units [u0, u1) only."""
        n, H = c.shape
        m = u1 - u0
        one = s.dtype.type(1.0)
        two = s.dtype.type(2.0)
        for b in range(n):
            si, sf, sg, so = (s[b, u0:u1], s[b, H + u0 : H + u1], s[b, 2 * H + u0 : 2 * H + u1],
                              s[b, 3 * H + u0 : 3 * H + u1])
            ri, rf, rg, ro = (r[b, u0:u1], r[b, H + u0 : H + u1], r[b, 2 * H + u0 : 2 * H + u1],
                              r[b, 3 * H + u0 : 3 * H + u1])
            cb, hb = c[b, u0:u1], h[b, u0:u1]
            for j in range(m):
                i = one / (one + _exp(si[j] + ri[j]))
                f = one / (one + _exp(sf[j] + rf[j]))
                gg = two / (one + _exp(sg[j] + rg[j])) - one
                o = one / (one + _exp(so[j] + ro[j]))
                cc = f * cb[j] + i * gg
                cb[j] = cc
                hb[j] = o * (two / (one + _exp(-two * cc)) - one)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer(s, r, c, h):
        """No-grad step: c (n,H) <- f c + i g in place, h (n,H) = o tanh(c); s, r (n,4H) only read.

        One pass, nothing kept for a backward: the four gates of unit j are read at j, H+j, 2H+j, 3H+j
        (four contiguous streams, so the j loop still vectorises) and never written back."""
        lstm_infer_units(s, r, c, h, 0, c.shape[1])

    @njit(cache=True, nogil=True)
    def _pack_rows(w, out):
        """out[j, k, l] = w[j PANEL + l, k]: each row of W read once, contiguous; each 32 KB block stays in L1."""
        for j in range(out.shape[0]):
            for lane in range(PANEL):
                row = w[j * PANEL + lane]
                blk = out[j]
                for k in range(w.shape[1]):
                    blk[k, lane] = row[k]

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
    def lstm_bwd_units(s, tc, h, g, cp, dh, dc, dz, u0, u1):
        """``lstm_bwd`` on hidden units [u0, u1) only (dz's gate columns q H + j of those units)."""
        n, H = dh.shape
        m = u1 - u0
        one = s.dtype.type(1.0)
        for b in range(n):
            si, sf, sg, so = (s[b, u0:u1], s[b, H + u0 : H + u1], s[b, 2 * H + u0 : 2 * H + u1],
                              s[b, 3 * H + u0 : 3 * H + u1])
            zi, zf, zg, zo = (dz[b, u0:u1], dz[b, H + u0 : H + u1], dz[b, 2 * H + u0 : 2 * H + u1],
                              dz[b, 3 * H + u0 : 3 * H + u1])
            dhb, tcb, hb = dh[b, u0:u1], tc[b, u0:u1], h[b, u0:u1]
            gb, cpb, dcb = g[b, u0:u1], cp[b, u0:u1], dc[b, u0:u1]
            for j in range(m):
                d = dhb[j]
                t = tcb[j]
                i = si[j]
                f = sf[j]
                sgj = sg[j]
                o = so[j]
                dct = dcb[j] + (o - hb[j] * t) * d
                zi[j] = dct * gb[j] * i * (one - i)
                zf[j] = dct * cpb[j] * f * (one - f)
                zg[j] = dct * i * sgj * (one - sgj)
                zo[j] = d * t * o * (one - o)
                dcb[j] = dct * f

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_bwd(s, tc, h, g, cp, dh, dc, dz):
        """One BPTT step's element-wise part: dz (n,4H) (g column at 1/4), dc <- dc_{t-1} in place."""
        lstm_bwd_units(s, tc, h, g, cp, dh, dc, dz, 0, dh.shape[1])

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_fwd_units(g, r, b_hn, hn, hp, h, u0, u1):
        """``gru_fwd`` on hidden units [u0, u1) only (the gate columns q H + j of those units)."""
        n, H = h.shape
        m = u1 - u0
        one = g.dtype.type(1.0)
        two = g.dtype.type(2.0)
        bn = b_hn[u0:u1]
        for b in range(n):
            for q in range(2):
                gq, rq = g[b, q * H + u0 : q * H + u1], r[b, q * H + u0 : q * H + u1]
                for j in range(m):
                    gq[j] = one / (one + _exp(gq[j] + rq[j]))
            gr, gz, ga = g[b, u0:u1], g[b, H + u0 : H + u1], g[b, 2 * H + u0 : 2 * H + u1]
            rn, hnb, pb, hb = r[b, 2 * H + u0 : 2 * H + u1], hn[b, u0:u1], hp[b, u0:u1], h[b, u0:u1]
            for j in range(m):
                v = rn[j] + bn[j]
                hnb[j] = v
                a = two / (one + _exp(ga[j] + gr[j] * v)) - one
                ga[j] = a
                hb[j] = a + gz[j] * (pb[j] - a)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_fwd(g, r, b_hn, hn, hp, h):
        """g (n,3H) += r on [r, z] then sigmoids, n = tanh in g[:, 2H:]; hn = r_n + b_hn; h written."""
        gru_fwd_units(g, r, b_hn, hn, hp, h, 0, h.shape[1])

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_infer_units(g, r, b_hn, hp, h, u0, u1):
        """``gru_infer`` on hidden units [u0, u1) only."""
        n, H = h.shape
        m = u1 - u0
        one = g.dtype.type(1.0)
        two = g.dtype.type(2.0)
        bn = b_hn[u0:u1]
        for b in range(n):
            gr, gz, ga = g[b, u0:u1], g[b, H + u0 : H + u1], g[b, 2 * H + u0 : 2 * H + u1]
            rr_, rz_, rn = r[b, u0:u1], r[b, H + u0 : H + u1], r[b, 2 * H + u0 : 2 * H + u1]
            pb, hb = hp[b, u0:u1], h[b, u0:u1]
            for j in range(m):
                rr = one / (one + _exp(gr[j] + rr_[j]))
                z = one / (one + _exp(gz[j] + rz_[j]))
                a = two / (one + _exp(ga[j] + rr * (rn[j] + bn[j]))) - one
                hb[j] = a + z * (pb[j] - a)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_infer(g, r, b_hn, hp, h):
        """No-grad step: h (n,H) from g, r (n,3H) (only read) and h_{t-1} = hp; nothing kept for a backward."""
        gru_infer_units(g, r, b_hn, hp, h, 0, h.shape[1])

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
    def gru_bwd_units(g, hn, hp, dh, dx, dhh, carry, u0, u1):
        """``gru_bwd`` on hidden units [u0, u1) only."""
        n, H = dh.shape
        m = u1 - u0
        one = g.dtype.type(1.0)
        half = g.dtype.type(-0.5)
        for b in range(n):
            gr, gz, gn = g[b, u0:u1], g[b, H + u0 : H + u1], g[b, 2 * H + u0 : 2 * H + u1]
            xr, xz, xn = dx[b, u0:u1], dx[b, H + u0 : H + u1], dx[b, 2 * H + u0 : 2 * H + u1]
            yr, yz, yn = dhh[b, u0:u1], dhh[b, H + u0 : H + u1], dhh[b, 2 * H + u0 : 2 * H + u1]
            dhb, hnb, pb, cb = dh[b, u0:u1], hn[b, u0:u1], hp[b, u0:u1], carry[b, u0:u1]
            for j in range(m):
                d = dhb[j]
                r = gr[j]
                z = gz[j]
                nn = gn[j]
                da = d * (one - nn * nn) * (one - z)
                dzz = d * (pb[j] - nn) * z * (one - z)
                dr = da * hnb[j] * half * r * (one - r)
                xr[j] = dr
                xz[j] = dzz
                xn[j] = da
                yr[j] = dr
                yz[j] = dzz
                yn[j] = da * r
                cb[j] = d * z

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_bwd(g, hn, hp, dh, dx, dhh, carry):
        """dGx, dGh rows (n,3H) of one step and carry = dh * z (the direct part of dh_{t-1})."""
        gru_bwd_units(g, hn, hp, dh, dx, dhh, carry, 0, dh.shape[1])
