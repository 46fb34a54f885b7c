"""The batch-split threading of the CNN ops (``functional/_threads.py``): one BLAS thread (no split) and two
(the batch split over two threads) give the same outputs and gradients, float32 and float64.

Only the weight gradients' sums are reordered (per-thread partials), so those agree to rounding; everything
else is computed row for row by the same kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import handgrad as hg
import handgrad.functional as F
from handgrad.functional import _threads
from handgrad.functional.rnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.ENABLED or not _threads._numpy_blas(),
                                reason="numba kernels disabled or NumPy's BLAS not controllable")


@pytest.fixture(autouse=True)
def split_small_ops(monkeypatch):
    """The test shapes are small: split them anyway (by default ops under ``MIN_WORK`` run unsplit)."""
    monkeypatch.setattr(_threads, "MIN_WORK", 0)

CASES = [  # (x shape, weight shape, padding): im2col (5x5, 1 channel, groups), Winograd (3x3, 16 channels)
    ((5, 3, 12, 11), (4, 3, 5, 5), 0),
    ((3, 1, 9, 9), (6, 1, 3, 3), 1),
    ((3, 16, 7, 9), (16, 16, 3, 3), 1),
]


def _run(x_np, w_np, b_np, pad, threads):
    with threadpool_limits(threads, user_api="blas"):
        assert _threads.workers(x_np.shape[0]) == threads
        x, w, b = (hg.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
        y = F.conv2d(x, w, b, padding=pad)
        (y * hg.tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape).astype(x_np.dtype))).sum().backward()
        return [a.numpy().copy() for a in (y, x.grad, w.grad, b.grad)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_split_over_threads_matches_one_thread(dtype, case):
    xs, ws, pad = case
    rng = np.random.default_rng(0)
    x_np, w_np = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b_np = rng.standard_normal(ws[0]).astype(dtype)
    one, two = _run(x_np, w_np, b_np, pad, 1), _run(x_np, w_np, b_np, pad, 2)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for a, b in zip(one, two):  # relative to the array's scale: a weight gradient is a long sum
        assert np.abs(a - b).max() <= tol * np.abs(a).max()


def test_split_leaves_blas_threads_as_they_were():
    with threadpool_limits(2, user_api="blas"):
        lib = _threads._numpy_blas()[0]
        seen = _threads.run(lambda lo, hi: (lo, hi, lib.get_num_threads()), 5)
        assert seen == [(0, 2, 1), (2, 5, 1)]  # chunks in order, BLAS at one thread inside
        assert lib.get_num_threads() == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_and_batch_norm_split_over_threads_match_one_thread(dtype):
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((5, 3, 8, 6)).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2).astype(dtype)
    w_np, b_np = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)

    def run(threads):
        with threadpool_limits(threads, user_api="blas"):
            x, w, b = (hg.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
            y = F.max_pool2d(F.batch_norm(x, None, None, w, b, training=True), 3, stride=2, padding=1)
            (y * hg.tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape).astype(dtype))).sum().backward()
            return [a.numpy().copy() for a in (y, x.grad, w.grad, b.grad)]

    tol = 1e-5 if dtype == np.float32 else 1e-13
    for a, b in zip(run(1), run(2)):
        assert np.abs(a - b).max() <= tol * np.abs(a).max()


def test_contiguous_copy_split_over_threads():
    a = np.arange(5 * 4 * 3 * 2, dtype=np.float32).reshape(5, 4, 3, 2).transpose(0, 2, 3, 1)
    with threadpool_limits(2, user_api="blas"):
        c = _threads.contiguous(a)
    assert c.flags.c_contiguous and np.array_equal(c, a)
    assert _threads.contiguous(c) is c  # already contiguous: no copy


def test_small_ops_are_not_split(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_WORK", 1000)
    with threadpool_limits(2, user_api="blas"):
        assert _threads.workers(4, 999) == 1 and _threads.workers(4, 1000) == 2 and _threads.workers(4) == 2
