"""The compiled (numba) LSTM/GRU step kernels against the NumPy fallback, on the same inputs.

``handgrad.functional.rnn._kernels.ENABLED`` switches the fused ops between the two paths; outputs, final
states and every gradient must agree (float32: a few ulps; float64: ~1e-13), with and without padded
``lengths`` and in reverse. The gradchecks and PyTorch comparisons of ``test_recurrent_ops.py`` run on the
compiled path (the default); this file is what ties the fallback to it.
"""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.functional.rnn import _kernels, _unit_split, gru_sequence, lstm_sequence

pytestmark = pytest.mark.skipif(not _kernels.ENABLED, reason="numba kernels disabled (HANDGRAD_NUMBA=0 or no numba)")


def _run(kind: str, dtype, compiled: bool, lengths, reverse: bool, scale: float, B: int = 5,
         H: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    T, I = 6, 4
    G = 4 if kind == "lstm" else 3
    x = hg.tensor((scale * rng.standard_normal((T, B, I))).astype(dtype), requires_grad=True)
    ws = [hg.tensor((0.5 * rng.standard_normal(s)).astype(dtype), requires_grad=True)
          for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    h0 = hg.tensor(rng.standard_normal((B, H)).astype(dtype), requires_grad=True)
    c0 = hg.tensor(rng.standard_normal((B, H)).astype(dtype), requires_grad=True)
    old = _kernels.ENABLED
    _kernels.ENABLED = compiled
    try:
        if kind == "lstm":
            out, hn, cn = lstm_sequence(x, (h0, c0), *ws, lengths=lengths, reverse=reverse)
            finals, leaves = [hn, cn], [x, h0, c0, *ws]
        else:
            out, hn = gru_sequence(x, h0, *ws, lengths=lengths, reverse=reverse)
            finals, leaves = [hn], [x, h0, *ws]
        gy = rng.standard_normal(out.shape).astype(dtype)
        loss = (out * hg.tensor(gy)).sum() + sum((f * f).sum() for f in finals)
        loss.backward()
    finally:
        _kernels.ENABLED = old
    return [out.numpy().copy(), *(f.numpy().copy() for f in finals), *(t.grad.numpy().copy() for t in leaves)]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4], False), ([2, 6, 5, 6, 3], True)])
def test_compiled_step_matches_numpy_fallback(kind, dtype, lengths, reverse):
    a = _run(kind, dtype, True, lengths, reverse, 1.0)
    b = _run(kind, dtype, False, lengths, reverse, 1.0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for u, v in zip(a, b):
        assert u.dtype == dtype
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_compiled_step_saturates_like_numpy(kind):
    """Inputs in -1e4..1e4 (float32): the gates saturate; the clamped exp must give the fallback's numbers."""
    a = _run(kind, np.float32, True, None, False, 1e4)
    b = _run(kind, np.float32, False, None, False, 1e4)
    for u, v in zip(a, b):
        assert np.all(np.isfinite(u))
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


def test_exp_kernels_accuracy():
    """The vectorisable exp: float32 within 2 ulp-ish, float64 within a few 1e-16, over the finite range."""
    x64 = np.linspace(-80.0, 80.0, 20001)

    @_kernels.njit
    def ev32(x, out):
        for i in range(x.shape[0]):
            out[i] = _kernels._exp32(x[i])

    @_kernels.njit
    def ev64(x, out):
        for i in range(x.shape[0]):
            out[i] = _kernels._exp64(x[i])

    x32 = x64.astype(np.float32)
    o32 = np.empty_like(x32)
    ev32(x32, o32)
    ref = np.exp(x32.astype(np.float64))
    assert np.max(np.abs(o32 - ref) / ref) < 3e-7
    o64 = np.empty_like(x64)
    ev64(x64, o64)
    assert np.max(np.abs(o64 - np.exp(x64)) / np.exp(x64)) < 1e-15


def _run_no_grad(kind: str, dtype, compiled: bool, lengths, reverse: bool, scale: float, B: int = 5,
                 H: int = 7) -> list[np.ndarray]:
    """The no-grad forward (``lstm_infer`` / ``gru_infer`` on the compiled path): output and final states."""
    rng = np.random.default_rng(2)
    T, I = 6, 4
    G = 4 if kind == "lstm" else 3
    x = hg.tensor((scale * rng.standard_normal((T, B, I))).astype(dtype))
    ws = [hg.tensor((0.5 * rng.standard_normal(s)).astype(dtype)) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    h0 = hg.tensor(rng.standard_normal((B, H)).astype(dtype))
    c0 = hg.tensor(rng.standard_normal((B, H)).astype(dtype))
    c0_before = c0.numpy().copy()
    old = _kernels.ENABLED
    _kernels.ENABLED = compiled
    try:
        with hg.no_grad():
            if kind == "lstm":
                out, *finals = lstm_sequence(x, (h0, c0), *ws, lengths=lengths, reverse=reverse)
            else:
                out, *finals = gru_sequence(x, h0, *ws, lengths=lengths, reverse=reverse)
    finally:
        _kernels.ENABLED = old
    np.testing.assert_array_equal(c0.numpy(), c0_before)  # the caller's initial state is never written
    return [out.numpy().copy(), *(f.numpy().copy() for f in finals)]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4], False), ([2, 6, 5, 6, 3], True)])
def test_compiled_no_grad_forward_matches_numpy_fallback(kind, dtype, lengths, reverse):
    a = _run_no_grad(kind, dtype, True, lengths, reverse, 1.0)
    b = _run_no_grad(kind, dtype, False, lengths, reverse, 1.0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for u, v in zip(a, b):
        assert u.dtype == dtype
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
    if lengths is not None:  # padded steps output exactly zero on both paths
        pad = np.arange(6)[:, None] >= np.asarray(lengths)[None, :]
        assert np.all(a[0][pad] == 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_no_grad_forward_saturates_like_numpy(kind, dtype):
    """Inputs in -1e4..1e4: the no-grad kernels saturate to the fallback's numbers, finite."""
    a = _run_no_grad(kind, dtype, True, [6, 3, 6, 1, 4], False, 1e4)
    b = _run_no_grad(kind, dtype, False, [6, 3, 6, 1, 4], False, 1e4)
    for u, v in zip(a, b):
        assert np.all(np.isfinite(u))
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_no_grad_forward_equals_training_forward(kind):
    """The no-grad path (nothing saved) gives the training forward's numbers (compiled path both times)."""
    rng = np.random.default_rng(3)
    T, B, I, H = 5, 3, 4, 6
    G = 4 if kind == "lstm" else 3
    x = hg.tensor(rng.standard_normal((T, B, I)))
    shapes = ((G * H, I), (G * H, H), (G * H,), (G * H,))
    ws = [hg.tensor(0.5 * rng.standard_normal(s), requires_grad=True) for s in shapes]
    fn = lstm_sequence if kind == "lstm" else gru_sequence
    train = fn(x, None, *ws)
    with hg.no_grad():
        infer = fn(x, None, *ws)
    assert train[0].requires_grad and not infer[0].requires_grad
    for u, v in zip(train, infer):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4], False), ([2, 6, 5, 6, 3], True)])
def test_batch_split_over_threads_matches_one_thread(kind, dtype, lengths, reverse):
    """With 2 BLAS threads the compiled LSTM/GRU runs each half of the batch's recurrence (forward, BPTT and the
    no-grad forward) on its own thread (``functional/_threads.py``): the numbers must be one thread's."""
    from threadpoolctl import threadpool_limits

    from handgrad.functional import _threads

    if not _threads._numpy_blas():
        pytest.skip("NumPy's BLAS is not controllable")
    got = {}
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            assert _threads.workers(5) == n
            got[n] = (_run(kind, dtype, True, lengths, reverse, 1.0)
                      + _run_no_grad(kind, dtype, True, lengths, reverse, 1.0))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for a, b in zip(got[1], got[2]):  # weight gradients are long sums: compare on the array's scale
        assert np.abs(a - b).max() <= tol * max(1.0, np.abs(a).max())


@pytest.mark.parametrize("n,k,m", [(13, 16, 64), (8, 65, 32), (1, 7, 96), (32, 256, 1024), (5, 1, 32), (20, 9, 64),
                                   (29, 33, 32), (12, 3, 96)])
def test_gemm_packed_matches_matmul(n, k, m):
    """The packed float32 GEMM (row blocks of 12, 8, 4, 1: 29 rows use all four; any K) against a float64
    product."""
    rng = np.random.default_rng(4)
    h = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((k, m)).astype(np.float32)
    out = np.full((n, m), np.nan, np.float32)
    _kernels.gemm_packed(h, _kernels.pack_columns(w), out)
    ref = h.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(out - ref).max() <= k * 1.2e-7 * np.abs(h).max() * np.abs(w).max()  # k roundings at most
    np.testing.assert_array_equal(_kernels.pack_rows(w.T), _kernels.pack_columns(w))  # W^T packed in one pass
    bias = rng.standard_normal(m).astype(np.float32)
    out_b = np.full((n, m), np.nan, np.float32)
    _kernels.gemm_packed_bias(h, _kernels.pack_columns(w), bias, out_b)  # the bias starts the accumulators
    bound = (k + 1) * 1.2e-7 * (k * np.abs(h).max() * np.abs(w).max() + np.abs(bias).max())  # k + 1 roundings
    assert np.abs(out_b - (ref + bias)).max() <= bound
    assert _kernels.packable(np, w) == _kernels.PACKED  # HANDGRAD_PACKED_GEMM=0 turns the route off
    assert not _kernels.packable(np, w.astype(np.float64))  # float64: numpy.matmul (measured no faster)
    assert not _kernels.packable(np, np.zeros((k, 48), np.float32))  # columns not a multiple of PANEL


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4, 6, 2, 5, 6, 6, 3, 1, 6], False),
                                             ([2, 6, 5, 6, 3, 1, 6, 4, 6, 6, 2, 6, 5], True)])
@pytest.mark.parametrize("kind,H", [("lstm", 8), ("lstm", 32), ("gru", 32)])
def test_packed_no_grad_forward_matches_numpy_fallback(monkeypatch, kind, H, lengths, reverse, scale):
    """float32, G*H a multiple of 32: the no-grad LSTM/GRU run their GEMMs on ``gemm_packed`` (13 rows: blocks
    of 8, 4 and 1) and must give the NumPy fallback's numbers at the tolerances of the unpacked kernels."""
    if not _kernels.PACKED:
        pytest.skip("HANDGRAD_PACKED_GEMM=0")
    calls = []
    # H a multiple of 32: the unit-split loop (_unit_split); else the row-split one (4H = 32 packs, H = 8 does not)
    units = _unit_split.usable(True, H)
    loop = (_unit_split, f"{kind}_infer_seq") if units else (_kernels, f"{kind}_infer_rows")
    for mod, name in (loop, (_kernels, "gemm_packed_bias")):
        f = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=f, _n=name: (calls.append(_n), _f(*a))[1])
    a = _run_no_grad(kind, np.float32, True, lengths, reverse, scale, B=13, H=H)
    assert loop[1] in calls  # the packed recurrence ran
    # the input projection: one packed GEMM before the loop, or (the LSTM's unit-split loop) inside it per step
    assert ("gemm_packed_bias" in calls) != (kind == "lstm" and units)
    calls.clear()
    b = _run_no_grad(kind, np.float32, False, lengths, reverse, scale, B=13, H=H)
    assert not calls
    tol = 1e-5 if scale == 1.0 else 1e-4
    for u, v in zip(a, b):
        assert u.dtype == np.float32 and np.all(np.isfinite(u))
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind,H", [("lstm", 8), ("gru", 32)])
def test_packed_no_grad_batch_split_matches_one_thread(kind, H):
    """The packed path split over 2 threads (each thread its own rows, ``functional/_threads.py``)."""
    from threadpoolctl import threadpool_limits

    from handgrad.functional import _threads

    if not _threads._numpy_blas():
        pytest.skip("NumPy's BLAS is not controllable")
    got = {}
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            lengths = [6, 3, 6, 1, 4, 6, 2, 5, 6, 6, 3, 1, 6]
            got[n] = _run_no_grad(kind, np.float32, True, lengths, False, 1.0, B=13, H=H)
            got[n] += _run(kind, np.float32, True, lengths, False, 1.0, B=13, H=32)  # training: packed too
    for a, b in zip(got[1], got[2]):  # weight gradients are long sums: compare on the array's scale
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(a).max())


@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4, 6, 2, 5, 6, 6, 3, 1, 6], False),
                                             ([2, 6, 5, 6, 3, 1, 6, 4, 6, 6, 2, 6, 5], True)])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_packed_training_matches_numpy_fallback(monkeypatch, kind, lengths, reverse):
    """float32, H = 32: the training LSTM/GRU's recurrent GEMMs (forward ``h W_hh^T``, BPTT ``dz W_hh``) run on
    ``gemm_packed``; outputs, final states and every gradient must match the NumPy fallback."""
    if not _kernels.PACKED:
        pytest.skip("HANDGRAD_PACKED_GEMM=0")
    calls = []
    if _unit_split.usable(True, 32):  # the whole-sequence loops (one BLAS thread): record their packed weight
        pos = {"lstm": (8, 10), "gru": (3, 9)}[kind]
        for name, at in ((f"{kind}_fwd_seq", pos[0]), (f"{kind}_bwd_seq", pos[1])):
            f = getattr(_unit_split, name)
            monkeypatch.setattr(_unit_split, name, lambda *a, _f=f, _i=at: (calls.append(a[_i].shape), _f(*a))[1])
    else:
        f = _kernels.gemm_packed
        monkeypatch.setattr(_kernels, "gemm_packed", lambda *a: (calls.append(a[1].shape), f(*a))[1])
    a = _run(kind, np.float32, True, lengths, reverse, 1.0, B=13, H=32)
    G = 4 if kind == "lstm" else 3
    assert (G, 32, 32) in calls and (1, G * 32, 32) in calls  # packed W_hh^T (forward) and W_hh (backward)
    b = _run(kind, np.float32, False, lengths, reverse, 1.0, B=13, H=32)
    for u, v in zip(a, b):  # weight gradients are long sums: compare on the array's scale
        assert u.dtype == np.float32
        assert np.abs(u - v).max() <= 1e-5 * max(1.0, np.abs(v).max())


def test_unit_split_barrier_orders_the_steps():
    """Two threads, 300 steps: after each barrier every thread sees the other's write of that step."""
    if not (_kernels.PACKED and _unit_split.ENABLED):  # the barrier's pause instruction is x86's; used with AVX-512
        pytest.skip("HANDGRAD_PACKED_GEMM=0, no AVX-512 or HANDGRAD_UNIT_SPLIT=0")
    import threading

    @_kernels.njit(nogil=True)
    def steps(bar, k, me, seen, n):
        bad = 0
        for e in range(n):
            seen[me * 16] = e
            _unit_split.barrier(bar, k, 2 * e)
            for o in range(k):
                bad += seen[o * 16] != e
            _unit_split.barrier(bar, k, 2 * e + 1)  # nobody writes step e + 1 before all have read step e
        return bad

    bar = np.zeros(16, np.int64)
    seen = np.full(32, -1, np.int64)
    out = [None, None]
    other = threading.Thread(target=lambda: out.__setitem__(1, steps(bar, 2, 1, seen, 300)))
    other.start()
    out[0] = steps(bar, 2, 0, seen, 300)
    other.join()
    assert out == [0, 0] and bar[0] == 2 * 2 * 300


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 3, 6, 1, 4, 6, 2, 5, 6, 6, 3, 1, 6], False),
                                             ([2, 6, 5, 6, 3, 1, 6, 4, 6, 6, 2, 6, 5], True)])
def test_unit_split_two_threads_matches_one_thread_and_numpy(monkeypatch, kind, lengths, reverse):
    """float32, H = 64 (two column blocks per gate): at 2 BLAS threads the packed recurrences (training forward,
    BPTT, no-grad forward) split over hidden units with a barrier per step; numbers as at 1 thread (the same
    sums in the same order: equal) and as the NumPy fallback."""
    from threadpoolctl import threadpool_limits

    from handgrad.functional import _threads

    if not (_kernels.PACKED and _unit_split.ENABLED):
        pytest.skip("HANDGRAD_PACKED_GEMM=0 or HANDGRAD_UNIT_SPLIT=0")
    if not _threads._numpy_blas():
        pytest.skip("NumPy's BLAS is not controllable")
    monkeypatch.setattr(_unit_split, "THREADS", True)  # opt-in (HANDGRAD_UNIT_SPLIT=2): units split at 2 threads
    ks = []
    for name in (f"{kind}_fwd_seq", f"{kind}_bwd_seq", f"{kind}_infer_seq"):
        f = getattr(_unit_split, name)
        monkeypatch.setattr(_unit_split, name, lambda *a, _f=f: (ks.append(a[-1]), _f(*a))[1])
    got = {}
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            ks.clear()
            got[n] = (_run(kind, np.float32, True, lengths, reverse, 1.0, B=13, H=64)
                      + _run_no_grad(kind, np.float32, True, lengths, reverse, 1.0, B=13, H=64))
            assert ks == [n] * (3 * n)  # 3 loops (forward, BPTT, no-grad) x n threads, each told k = n
    ref = (_run(kind, np.float32, False, lengths, reverse, 1.0, B=13, H=64)
           + _run_no_grad(kind, np.float32, False, lengths, reverse, 1.0, B=13, H=64))
    for a, b, r in zip(got[1], got[2], ref):
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - r).max() <= 1e-5 * max(1.0, np.abs(r).max())
