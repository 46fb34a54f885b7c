"""The float32 LSTM/GRU recurrences on the packed GEMM as whole-sequence compiled loops, split over HIDDEN UNITS
between threads: each thread computes, for the whole batch, the gate columns of its own units (the packed
GEMM's column blocks ``q H + j`` of every gate q, ``_kernels.gemm_blocks``), runs the gate pass on them, and
waits at a spin barrier before the next step (whose GEMM reads every unit of ``h_t``).

Why units and not the batch (``_threads.run`` over rows, the other compiled paths): the recurrent GEMM at the
char-LM's sizes (B 32, H 256) streams the whole ``W_hh`` (1 MB of float32) per step, more than this core's L2
holds next to the rest; split by rows, each thread streams all of it for half the rows, split by units each
thread streams its half (512 KB, L2-resident) for all rows. The BPTT loop splits the same way: after the gate
pass of its units and the barrier, each thread computes its units' columns of ``dh_{t-1} = dz_t W_hh``.
Hazards: per step a thread writes only its units' columns (of ``R``, the input projection ``S[t]`` / ``SX``,
``h_{t+1}``, ``c``, ``dz_t``, ``dh``), and reads other threads' columns only of arrays written before the last
barrier (``h_t``, ``dz_t``). The LSTM's forward loops also project each step's input (their units' columns)
themselves, so the (T, B, 4H) projections are not written for the whole sequence first and read back cold.

At one thread the same loops run with no barrier: one compiled call per sequence instead of two per step
from Python (the training forward and BPTT).

The barrier is a shared int64 counter: each thread adds 1 (an atomic read-modify-write) and spins (``pause``)
until it reaches ``k`` times the number of barriers passed; after ~4,000 spins it yields the core
(``sched_yield``), so that a descheduled partner on a loaded machine, or fewer cores than threads, costs time
but never a livelock. ``HANDGRAD_UNIT_SPLIT=0`` returns the packed paths to the per-step loops split over the
batch. Measured on the idle 2-core machine, the split over units with a barrier per step was slower at 2 threads
than the row split (BENCHMARKS.md, third pass), so by default these loops run only at one BLAS thread (the row
split runs at more); ``HANDGRAD_UNIT_SPLIT=2`` splits the units between the threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy

from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels

ENABLED = os.environ.get("HANDGRAD_UNIT_SPLIT", "1") != "0"
# Split the units between threads (barrier per step) only on request: measured on the idle 2-core machine it
# was SLOWER than the row split at 2 threads (lstm-train ratio 1.48-1.55 against 1.21-1.23, lstm-fwd 1.05-1.37
# against 0.77-0.91; BENCHMARKS.md), so by default these loops run at one BLAS thread only
THREADS = os.environ.get("HANDGRAD_UNIT_SPLIT", "1") == "2"
SPINS = 4000  # pause instructions (~40-60 ns each) before the barrier starts yielding the core


def usable(packed: Any, H: int) -> bool:
    """The whole-sequence loops apply: the packed GEMM is in use (float32, AVX-512, compiled path), the hidden
    size is a multiple of PANEL (each gate's columns whole blocks), and NumPy's BLAS runs one thread (or
    ``HANDGRAD_UNIT_SPLIT=2``: split the units between its threads)."""
    return (ENABLED and packed is not None and H % _kernels.PANEL == 0
            and (THREADS or _threads.workers(2) == 1))


def run(kernel: Callable[..., None], H: int, work: int, *args: Any) -> None:
    """``kernel(*args, u0, u1, bar, k)`` on each thread's hidden units [u0, u1) (multiples of PANEL), one call
    per thread; ``k`` threads = NumPy's BLAS thread count, at most H / PANEL (``_threads.workers``)."""
    nb = H // _kernels.PANEL
    k = _threads.workers(nb, work)
    bar = numpy.zeros(16, numpy.int64)  # the counter at [0]; 128 bytes so it has its cache line to itself

    def part(lo: int, hi: int) -> None:
        kernel(*args, lo * _kernels.PANEL, hi * _kernels.PANEL, bar, k)

    _threads.run(part, nb, work, n_workers=k)


if _kernels.ENABLED:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from handgrad.functional.rnn._kernels import (
        PANEL,
        gemm_blocks,
        gemm_blocks_bias,
        gru_bwd_units,
        gru_fwd_units,
        gru_infer_units,
        lstm_bwd_units,
        lstm_fwd_units,
        lstm_infer_units,
    )

    @intrinsic
    def _fetch_add(typingctx, arr, val):  # noqa: N805 - numba's intrinsic signature
        """``arr[0] += val`` atomically (sequentially consistent); returns the old value."""

        def codegen(context, builder, sig, args):
            ptr = context.make_array(sig.args[0])(context, builder, args[0]).data
            return builder.atomic_rmw("add", ptr, args[1], "seq_cst")

        return types.int64(arr, types.int64), codegen

    @intrinsic
    def _load(typingctx, arr):  # noqa: N805
        """``arr[0]``, an atomic load: never hoisted out of the spin loop, orders the reads after it."""

        def codegen(context, builder, sig, args):
            ptr = context.make_array(sig.args[0])(context, builder, args[0]).data
            return builder.load_atomic(ptr, "seq_cst", 8)

        return types.int64(arr), codegen

    @intrinsic
    def _relax(typingctx, spins):  # noqa: N805
        """``pause`` while ``spins`` < SPINS, then ``sched_yield()``."""

        def codegen(context, builder, sig, args):
            mod = builder.module
            pause = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            yld = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            with builder.if_else(builder.icmp_signed("<", args[0], ir.Constant(ir.IntType(64), SPINS))) as (a, b):
                with a:
                    builder.call(pause, [])
                with b:
                    builder.call(yld, [])
            return context.get_dummy_value()

        return types.void(types.int64), codegen

    @njit(cache=True, nogil=True)
    def barrier(bar, k, episode):
        """Wait until all ``k`` threads have called ``barrier`` for the ``episode``-th time (0, 1, ...)."""
        if k == 1:
            return
        _fetch_add(bar, numpy.int64(1))
        goal = k * (episode + 1)
        spins = 0
        while _load(bar) < goal:
            _relax(spins)
            spins += 1

    @njit(cache=True, nogil=True, error_model="numpy")
    def _add_units(dh, gy, n, u0, u1):
        """dh[:n, u0:u1] += gy[:n, u0:u1]."""
        for b in range(n):
            d, g = dh[b, u0:u1], gy[b, u0:u1]
            for j in range(u1 - u0):
                d[j] += g[j]

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_infer_seq(X, p_ih, bias, Hs, p, SX, R, c, sizes, u0, u1, bar, k):
        """No-grad LSTM, units [u0, u1): per step the input projection ``s = x_t W_ih^T + b`` (into the reused
        (B, 4H) buffer ``SX``) and ``r = h_{t-1} W_hh^T`` on those units' 4 gate blocks, then ``lstm_infer`` on
        them (``c`` updated in place, ``h_t`` written), then the barrier.

        The input projection per step rather than for all T steps at once: the (T, B, 4H) result (13 MB at T100
        B32 H256) is then never written to memory and read back; measured (1 thread), the gate pass took 3.0 ms
        per 100 steps reading it and 1.9 ms reading L2-resident buffers."""
        nb = c.shape[1] // PANEL
        j0, j1 = u0 // PANEL, u1 // PANEL
        for t in range(X.shape[0]):
            n = sizes[t]  # non-increasing; the rows still running
            if n == 0:
                break
            s, r = SX[:n], R[:n]
            gemm_blocks_bias(X[t, :n], p_ih, bias, s, 4, nb, j0, j1)
            gemm_blocks(Hs[t, :n], p, r, 4, nb, j0, j1)
            lstm_infer_units(s, r, c[:n], Hs[t + 1, :n], u0, u1)
            barrier(bar, k, t)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_fwd_seq(X, p_ih, bias, S, Hs, Cs, TC, GG, p, R, sizes, u0, u1, bar, k):
        """Training LSTM forward, units [u0, u1): per step the input projection into ``S[t]`` (kept: the gate
        pass stores the sigmoids there for the backward; projected here, it is still in cache when the gate
        pass reads it), the packed recurrent GEMM, ``lstm_fwd``, then the barrier."""
        nb = Hs.shape[2] // PANEL
        for t in range(S.shape[0]):
            n = sizes[t]
            if n == 0:
                break
            r = R[:n]
            gemm_blocks_bias(X[t, :n], p_ih, bias, S[t, :n], 4, nb, u0 // PANEL, u1 // PANEL)
            gemm_blocks(Hs[t, :n], p, r, 4, nb, u0 // PANEL, u1 // PANEL)
            lstm_fwd_units(S[t, :n], r, Cs[t, :n], Cs[t + 1, :n], TC[t, :n], GG[t, :n], Hs[t + 1, :n], u0, u1)
            barrier(bar, k, t)

    @njit(cache=True, nogil=True, error_model="numpy")
    def lstm_bwd_seq(S, TC, Hs, GG, Cs, dh, dc, dZ, gy, has_gy, p, sizes, u0, u1, bar, k):
        """LSTM BPTT, units [u0, u1): ``lstm_bwd`` on them, the barrier, then their columns of the carry
        ``dh_{t-1} = dz_t W_hh`` (``p`` = W_hh (4H, H) packed: H / PANEL blocks of K = 4H)."""
        e = 0
        for t in range(S.shape[0] - 1, -1, -1):
            n = sizes[t]
            if n == 0:
                continue  # no row is running at this step (lengths all shorter)
            if has_gy:
                _add_units(dh, gy[t], n, u0, u1)
            dz = dZ[t, :n]
            lstm_bwd_units(S[t, :n], TC[t, :n], Hs[t + 1, :n], GG[t, :n], Cs[t, :n], dh[:n], dc[:n], dz, u0, u1)
            barrier(bar, k, e)
            e += 1
            gemm_blocks(dz, p, dh[:n], 1, 0, u0 // PANEL, u1 // PANEL)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_infer_seq(G, Hs, p, R, b_hn, sizes, u0, u1, bar, k):
        """No-grad GRU, units [u0, u1): the packed GEMM on their 3 gate blocks, ``gru_infer``, the barrier."""
        nb = Hs.shape[2] // PANEL
        for t in range(G.shape[0]):
            n = sizes[t]
            if n == 0:
                break
            r = R[:n]
            gemm_blocks(Hs[t, :n], p, r, 3, nb, u0 // PANEL, u1 // PANEL)
            gru_infer_units(G[t, :n], r, b_hn, Hs[t, :n], Hs[t + 1, :n], u0, u1)
            barrier(bar, k, t)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_fwd_seq(G, Hs, HN, p, R, b_hn, sizes, u0, u1, bar, k):
        """Training GRU forward, units [u0, u1): the packed GEMM, ``gru_fwd``, the barrier."""
        nb = Hs.shape[2] // PANEL
        for t in range(G.shape[0]):
            n = sizes[t]
            if n == 0:
                break
            r = R[:n]
            gemm_blocks(Hs[t, :n], p, r, 3, nb, u0 // PANEL, u1 // PANEL)
            gru_fwd_units(G[t, :n], r, b_hn, HN[t, :n], Hs[t, :n], Hs[t + 1, :n], u0, u1)
            barrier(bar, k, t)

    @njit(cache=True, nogil=True, error_model="numpy")
    def gru_bwd_seq(G, HN, Hs, dh, dGx, dGh, bz, gy, has_gy, p, sizes, u0, u1, bar, k):
        """GRU BPTT, units [u0, u1): ``gru_bwd`` on them, the barrier, then their columns of
        ``dh_{t-1} = dGh_t W_hh + dh_t z_t`` (``p`` = W_hh (3H, H) packed)."""
        e = 0
        for t in range(G.shape[0] - 1, -1, -1):
            n = sizes[t]
            if n == 0:
                continue
            if has_gy:
                _add_units(dh, gy[t], n, u0, u1)
            gru_bwd_units(G[t, :n], HN[t, :n], Hs[t, :n], dh[:n], dGx[t, :n], dGh[t, :n], bz[:n], u0, u1)
            barrier(bar, k, e)
            e += 1
            gemm_blocks(dGh[t, :n], p, dh[:n], 1, 0, u0 // PANEL, u1 // PANEL)
            _add_units(dh, bz, n, u0, u1)
