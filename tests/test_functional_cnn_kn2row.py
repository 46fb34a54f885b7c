"""kn2row conv2d (``functional/_kn2row.py``: multiply first, shift after, for fewer output than input channels):
against PyTorch and the im2col path, gradchecked, one thread against two; and the 1x1 convolution's backward,
which skips col2im, against PyTorch.

By default kn2row runs only for float32; here float64 is switched on (``DTYPES``) so that the float64 PyTorch
comparison and the finite-difference gradcheck see the kn2row code itself, and a spy checks that it ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _cnn_helpers import arrays, compare_torch
from threadpoolctl import threadpool_limits

import handgrad as hg
import handgrad.functional as F
from handgrad.engine.gradcheck import gradcheck
from handgrad.functional import _kn2row, _threads
from handgrad.functional.rnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.ENABLED, reason="numba kernels disabled (HANDGRAD_NUMBA=0 or no numba)")

CASES = [  # (x shape, out channels, kernel, padding, dilation, bias)
    ((2, 5, 7, 9), 3, 3, 1, 1, True),
    ((1, 4, 8, 8), 2, 3, 0, 1, False),
    ((2, 6, 6, 5), 2, (3, 5), (2, 1), 1, True),  # rectangular kernel, uneven padding
    ((1, 5, 9, 8), 4, 3, 2, 2, False),  # dilated
    ((2, 3, 5, 6), 1, 5, "same", 1, True),
]


@pytest.fixture
def kn2row_everywhere(monkeypatch):
    """kn2row for float32 and float64; returns the list of its forward calls."""
    monkeypatch.setattr(_kernels, "ENABLED", True)
    monkeypatch.setattr(_kn2row, "DTYPES", (np.float32, np.float64))
    calls = []
    orig = _kn2row.forward
    monkeypatch.setattr(_kn2row, "forward", lambda *a: calls.append(1) or orig(*a))
    return calls


def _k(k):
    return k if isinstance(k, tuple) else (k, k)


@pytest.mark.parametrize("case", CASES)
def test_kn2row_matches_torch_float64(case, kn2row_everywhere):
    shape, o, k, pad, dil, bias = case
    arrs = arrays(0, shape, (o, shape[1], *_k(k)), (o,) if bias else None)
    compare_torch(lambda x, w, b: F.conv2d(x, w, b, padding=pad, dilation=dil),
                  lambda x, w, b: TF.conv2d(x, w, b, padding=pad, dilation=dil), arrs)
    assert kn2row_everywhere


def test_kn2row_gradcheck(kn2row_everywhere):
    x, w, b = (hg.tensor(a, requires_grad=True) for a in arrays(1, (2, 4, 5, 6), (3, 4, 3, 3), (3,)))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=1), (x, w, b))
    assert kn2row_everywhere


@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: the extreme-value range, float32
def test_kn2row_float32_matches_im2col_and_torch(scale, kn2row_everywhere, monkeypatch):
    rng = np.random.default_rng(2)
    x_np = rng.uniform(-scale, scale, (3, 32, 10, 9)).astype(np.float32)
    w_np = (rng.standard_normal((8, 32, 3, 3)) / 16).astype(np.float32)
    g_np = rng.standard_normal((3, 8, 10, 9)).astype(np.float32)
    res = []
    for dtypes in ((np.float32,), ()):  # kn2row, then the im2col path
        monkeypatch.setattr(_kn2row, "DTYPES", dtypes)
        x, w = hg.tensor(x_np, requires_grad=True), hg.tensor(w_np, requires_grad=True)
        y = F.conv2d(x, w, padding=1)
        y.backward(hg.tensor(g_np))
        res.append((y.numpy().copy(), x.grad.numpy().copy(), w.grad.numpy().copy()))
    assert len(kn2row_everywhere) == 1
    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    ty = TF.conv2d(tx, tw, padding=1)
    ty.backward(torch.tensor(g_np))
    for ours, direct, theirs in zip(*res, (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy())):
        size = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-5 * size
        assert np.abs(ours - direct).max() <= 1e-5 * size


def test_kn2row_two_threads_equal_one(kn2row_everywhere, monkeypatch):
    """The batch split (each thread: its images' GEMM rows, gather/scatter, a part of dW) gives the one-thread
    numbers; the split is forced on for this small op."""
    monkeypatch.setattr(_threads, "MIN_WORK", 0)
    if not _threads._numpy_blas():
        pytest.skip("threadpoolctl cannot see NumPy's BLAS")
    rng = np.random.default_rng(3)
    x_np, w_np = rng.standard_normal((5, 12, 7, 7)), rng.standard_normal((4, 12, 3, 3))
    out = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            x, w = hg.tensor(x_np, requires_grad=True), hg.tensor(w_np, requires_grad=True)
            y = F.conv2d(x, w, padding=1)
            (y * y).sum().backward()
        out.append((y.numpy(), x.grad.numpy(), w.grad.numpy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert len(kn2row_everywhere) == 2


def test_kn2row_not_used_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(_kernels, "ENABLED", True)
    calls = []
    orig = _kn2row.forward
    monkeypatch.setattr(_kn2row, "forward", lambda *a: calls.append(1) or orig(*a))
    x = hg.randn(1, 8, 6, 6).to(dtype="float32")
    F.conv2d(x, hg.randn(4, 8, 3, 3).to(dtype="float32"), stride=2, padding=1)  # strided
    F.conv2d(x, hg.randn(8, 8, 3, 3).to(dtype="float32"), padding=1)  # as many outputs as inputs
    F.conv2d(x, hg.randn(4, 8, 1, 1).to(dtype="float32"))  # 1x1: a plain GEMM already
    F.conv2d(x, hg.randn(4, 4, 3, 3).to(dtype="float32"), padding=1, groups=2)  # groups
    F.conv2d(x.to(dtype="float64"), hg.randn(4, 8, 3, 3).to(dtype="float64"), padding=1)  # float64: im2col
    assert not calls
    F.conv2d(x, hg.randn(4, 8, 3, 3).to(dtype="float32"), padding=1)
    assert calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pointwise_conv_backward_matches_torch(dtype):
    """A 1x1, stride-1, unpadded conv's input gradient is dY W (col2im would be a copy): against PyTorch."""
    rng = np.random.default_rng(5)
    x_np, w_np = rng.standard_normal((2, 6, 5, 4)).astype(dtype), rng.standard_normal((3, 6, 1, 1)).astype(dtype)
    x, w = hg.tensor(x_np, requires_grad=True), hg.tensor(w_np, requires_grad=True)
    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    g = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    F.conv2d(x, w).backward(hg.tensor(g))
    TF.conv2d(tx, tw).backward(torch.tensor(g))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 9 * 9 * 27 * 8])  # one image per chunk; two (last chunk short)
def test_kn2row_chunks_match_torch_float64(chunk_bytes, threads, kn2row_everywhere, monkeypatch):
    """Z / gZ made a few images at a time (``CHUNK_BYTES``): chunk offsets into y, gy and dx, and dW summed over
    chunks, against PyTorch; at 2 threads each thread's range is chunked on its own (5 images: 2 + 3)."""
    monkeypatch.setattr(_kn2row, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(_threads, "MIN_WORK", 0)
    if threads > 1 and not _threads._numpy_blas():
        pytest.skip("threadpoolctl cannot see NumPy's BLAS")
    arrs = arrays(4, (5, 6, 7, 7), (3, 6, 3, 3), (3,))  # padded 9x9, kh*kw*O = 27 columns of Z
    assert _kn2row.chunk_images(9, 9, 27, 8) == (1 if chunk_bytes == 1 else 2)
    with threadpool_limits(limits=threads, user_api="blas"):
        compare_torch(lambda x, w, b: F.conv2d(x, w, b, padding=1), lambda x, w, b: TF.conv2d(x, w, b, padding=1),
                      arrs)
    assert kn2row_everywhere
