"""Winograd conv2d, F(4x4, 3x3) and F(4x4, 5x5) (``functional/_winograd.py``): against PyTorch and the im2col
path, gradchecked.

By default Winograd runs only for float32 with >= 16 channels; here float64 and small channel counts are
switched on (``DTYPES``, ``MIN_CHANNELS``) so that the float64 PyTorch comparison and the finite-difference
gradcheck see the Winograd code itself, and a spy checks that it really ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _cnn_helpers import arrays, compare_torch

import handgrad as hg
import handgrad.functional as F
from handgrad.engine.gradcheck import gradcheck
from handgrad.functional import _winograd
from handgrad.functional.rnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.ENABLED, reason="numba kernels disabled (HANDGRAD_NUMBA=0 or no numba)")

CASES = [  # (x shape, out channels, kernel size, padding, bias)
    ((2, 3, 7, 9), 4, 3, 1, True),  # odd output: the last tiles are half outside
    ((1, 2, 8, 8), 3, 3, 0, False),
    ((2, 2, 6, 5), 2, 3, 2, True),
    ((1, 3, 5, 6), 2, 3, "same", False),
    ((2, 3, 12, 11), 4, 5, 0, True),  # LeNet's conv2 geometry, small
    ((1, 2, 7, 8), 3, 5, 2, False),
]


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Winograd for float32 and float64, any channel count; returns the list of its forward calls."""
    monkeypatch.setattr(_kernels, "ENABLED", True)
    monkeypatch.setattr(_winograd, "DTYPES", (np.float32, np.float64))
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 1)
    calls = []
    orig = _winograd.forward
    monkeypatch.setattr(_winograd, "forward", lambda *a: calls.append(1) or orig(*a))
    return calls


@pytest.mark.parametrize("case", CASES)
def test_winograd_matches_torch_float64(case, winograd_everywhere):
    shape, o, k, pad, bias = case
    arrs = arrays(0, shape, (o, shape[1], k, k), (o,) if bias else None)
    compare_torch(lambda x, w, b: F.conv2d(x, w, b, padding=pad), lambda x, w, b: TF.conv2d(x, w, b, padding=pad),
                  arrs)
    assert winograd_everywhere


@pytest.mark.parametrize("k", [3, 5])
def test_winograd_gradcheck(k, winograd_everywhere):
    x, w, b = (hg.tensor(a, requires_grad=True) for a in arrays(1, (2, 2, 5, 6), (3, 2, k, k), (3,)))
    # conv is bilinear in (x, w): central differences are exact at any step, and a step of 1e-3 keeps the
    # forward's rounding (F(4x4, 5x5)'s transforms amplify it to ~1e-14) from swamping the difference quotient
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=k // 2), (x, w, b), eps=1e-3)
    assert winograd_everywhere


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: the extreme-value range, float32
def test_winograd_float32_matches_im2col_and_torch(k, scale, winograd_everywhere, monkeypatch):
    rng = np.random.default_rng(2)
    x_np = rng.uniform(-scale, scale, (2, 16, 9, 10)).astype(np.float32)
    w_np = rng.standard_normal((16, 16, k, k)).astype(np.float32) / (4 * k)
    g_np = rng.standard_normal((2, 16, 9, 10)).astype(np.float32)
    res = []
    for dtypes in ((np.float32,), ()):  # Winograd, then the im2col path
        monkeypatch.setattr(_winograd, "DTYPES", dtypes)
        x, w = hg.tensor(x_np, requires_grad=True), hg.tensor(w_np, requires_grad=True)
        y = F.conv2d(x, w, padding=k // 2)
        y.backward(hg.tensor(g_np))
        res.append((y.numpy().copy(), x.grad.numpy().copy(), w.grad.numpy().copy()))
    assert len(winograd_everywhere) == 1
    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    ty = TF.conv2d(tx, tw, padding=k // 2)
    ty.backward(torch.tensor(g_np))
    ref = (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy())
    for wino, direct, theirs in zip(*res, ref):
        size = np.abs(theirs).max()
        # Winograd's rounding is of the same order as the direct sums' (both against PyTorch's)
        assert np.abs(wino - theirs).max() <= 2e-6 * size * 8
        assert np.abs(wino - direct).max() <= 2e-6 * size * 8


def test_winograd_not_used_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(_kernels, "ENABLED", True)
    calls = []
    orig = _winograd.forward
    monkeypatch.setattr(_winograd, "forward", lambda *a: calls.append(1) or orig(*a))
    x32 = hg.randn(1, 16, 6, 6).to(dtype="float32")
    w32 = hg.randn(16, 16, 3, 3).to(dtype="float32")
    F.conv2d(x32, w32, stride=2, padding=1)  # strided
    F.conv2d(x32, w32, padding=2, dilation=2)  # dilated
    F.conv2d(x32.to(dtype="float64"), w32.to(dtype="float64"), padding=1)  # float64 keeps im2col by default
    F.conv2d(x32[:, :4], w32[:4, :4], padding=1)  # too few channels
    F.conv2d(x32, hg.randn(16, 16, 3, 5).to(dtype="float32"), padding=1)  # not square
    F.conv2d(x32, hg.randn(16, 16, 7, 7).to(dtype="float32"), padding=3)  # no tiles for 7x7
    assert not calls
    F.conv2d(x32, w32, padding=1)
    assert calls


@pytest.mark.parametrize("m, r, points", [(2, 3, (0.0, 1.0, -1.0)), (2, 5, _winograd.F_2X2_5X5[1]),
                                          *((m, r, pts) for r, (m, pts) in _winograd.TILES.items())])
def test_cook_toom_matrices_compute_correlation(m, r, points):
    at, g, bt = _winograd.cook_toom(m, r, points)
    rng = np.random.default_rng(4)
    for _ in range(3):
        d, w = rng.standard_normal(m + r - 1), rng.standard_normal(r)
        y = at @ ((g @ w) * (bt @ d))
        np.testing.assert_allclose(y, [w @ d[i : i + r] for i in range(m)], rtol=1e-12, atol=1e-12)
