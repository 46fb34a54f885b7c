"""The compiled (numba) col2im against the NumPy fallback, on the same inputs, float32 and float64.

Both the serial and the ``parallel=True`` variant are compared directly, and the whole conv2d backward is run
with the kernels on and off (``handgrad.functional.rnn._kernels.ENABLED``, the one switch for all kernels).
"""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
import handgrad.functional as F
from handgrad.functional import _cnn_kernels, _cnn_util
from handgrad.functional.rnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.ENABLED, reason="numba kernels disabled (HANDGRAD_NUMBA=0 or no numba)")

CASES = [  # (N, Hp, Wp, C, k, s, d)
    (2, 9, 9, 3, (3, 3), (1, 1), (1, 1)),
    (3, 12, 12, 5, (5, 5), (1, 1), (1, 1)),
    (2, 11, 10, 4, (3, 2), (2, 2), (1, 1)),
    (2, 8, 8, 6, (2, 2), (2, 2), (1, 1)),  # tiles exactly (the NumPy path assigns instead of adding)
    (1, 13, 9, 2, (3, 3), (1, 2), (2, 1)),  # row dilation
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_col2im_compiled_matches_numpy(dtype, case, monkeypatch):
    n, hp, wp, c, k, s, d = case
    out = tuple(_cnn_util.conv_out_size((hp, wp)[a], k[a], s[a], 0, d[a]) for a in (0, 1))
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((1, n * out[0] * out[1], k[0] * k[1] * c)).astype(dtype)
    monkeypatch.setattr(_kernels, "ENABLED", False)
    ref = _cnn_util.col2im(cols, (n, hp, wp, c), k, s, d, out, 1)
    monkeypatch.setattr(_kernels, "ENABLED", True)
    assert _cnn_kernels.usable(np, cols, 1, d[1])
    got = _cnn_kernels.col2im(cols, (n, hp, wp, c), k, s, d, out)
    assert got.dtype == dtype and got.shape == ref.shape
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_backward_same_with_and_without_kernels(dtype, monkeypatch):
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    w_np = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    g_np = rng.standard_normal((2, 4, 5, 5)).astype(dtype)
    grads = []
    for on in (True, False):
        monkeypatch.setattr(_kernels, "ENABLED", on)
        x = hg.tensor(x_np, requires_grad=True)
        w = hg.tensor(w_np, requires_grad=True)
        y = F.conv2d(x, w, stride=2, padding=1)
        (y * hg.tensor(g_np)).sum().backward()
        grads.append((x.grad.numpy().copy(), w.grad.numpy().copy()))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
