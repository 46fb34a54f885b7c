"""The compiled (numba) max-pool and batch-norm kernels against the NumPy fallback, same inputs, float32/float64.

Each case runs the public op twice, with the kernels on and off (``handgrad.functional.rnn._kernels.ENABLED``,
the one switch for all kernels), and compares outputs and gradients. Max pooling only selects and routes
values, so both paths agree exactly (up to the order of the sums where windows overlap); batch norm
reorders its sums (one pass), so to a few ulps.
"""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
import handgrad.functional as F
from handgrad.functional.rnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.ENABLED, reason="numba kernels disabled (HANDGRAD_NUMBA=0 or no numba)")

POOLS = [  # (input shape, kwargs)
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((2, 4, 9, 7), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 10, 11), dict(kernel_size=(3, 2), stride=(1, 2), dilation=(2, 1))),
    ((2, 3, 7, 7), dict(kernel_size=2, ceil_mode=True)),
    ((1, 2, 9, 9), dict(kernel_size=3, stride=1, padding=1)),  # overlapping windows: the scatter accumulates
]


def _run(x_np, g_np, channels_last, on, monkeypatch, fn):
    monkeypatch.setattr(_kernels, "ENABLED", on)
    x = hg.tensor(x_np.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2) if channels_last else x_np,
                  requires_grad=True)
    y = fn(x)
    (y * hg.tensor(g_np)).sum().backward()
    return y.numpy().copy(), x.grad.numpy().copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", POOLS)
def test_max_pool2d_compiled_matches_numpy(dtype, channels_last, case, monkeypatch):
    shape, kw = case
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape).astype(dtype)
    x_np[0, 0, :2, :2] = 1.5  # a tie: the first arg-max in scan order gets the gradient
    x_np[-1, -1, -1, -1] = np.nan  # NaN propagates and takes the gradient
    ref_y = F.max_pool2d(hg.tensor(x_np), **kw).numpy()
    g_np = rng.standard_normal(ref_y.shape).astype(dtype)
    on = _run(x_np, g_np, channels_last, True, monkeypatch, lambda t: F.max_pool2d(t, **kw))
    off = _run(x_np, g_np, channels_last, False, monkeypatch, lambda t: F.max_pool2d(t, **kw))
    np.testing.assert_array_equal(on[0], off[0])
    # where windows overlap, a cell's contributions are summed in another order: equal to the last ulp
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(on[1], off[1], rtol=tol, atol=tol)
    assert np.array_equal(on[1] != 0, off[1] != 0)  # the same cells get gradient


def test_max_pool2d_compiled_extreme_values(monkeypatch):
    rng = np.random.default_rng(1)
    x_np = rng.uniform(-1e4, 1e4, (2, 3, 6, 6)).astype(np.float32)
    x_np[0, 1, :2, :2] = -np.inf  # a window of -inf (one -inf output)
    g_np = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    on = _run(x_np, g_np, True, True, monkeypatch, lambda t: F.max_pool2d(t, 2))
    off = _run(x_np, g_np, True, False, monkeypatch, lambda t: F.max_pool2d(t, 2))
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


# -- batch norm ----------------------------------------------------------------------------------------------
NORMS = [  # (input shape (logical), channels-last memory)
    ((4, 3, 5, 6), True),
    ((16, 5), False),  # (N, C): the rows are the batch
    ((3, 4, 7), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", NORMS)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("offset", [0.0, 1e3])  # a large mean: the shifted one-pass variance must stay accurate
def test_batch_norm_compiled_matches_numpy(dtype, case, affine, offset, monkeypatch):
    shape, channels_last = case
    c = shape[1]
    rng = np.random.default_rng(2)
    x_np = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    if channels_last:
        perm = (0, *range(2, len(shape)), 1)
        x_np = x_np.transpose(perm).copy().transpose(np.argsort(perm))
    w_np, b_np = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g_np = rng.standard_normal(shape).astype(dtype)
    results = []
    for on in (True, False):
        monkeypatch.setattr(_kernels, "ENABLED", on)
        x = hg.tensor(x_np, requires_grad=True)
        w = hg.tensor(w_np, requires_grad=True) if affine else None
        b = hg.tensor(b_np, requires_grad=True) if affine else None
        rm, rv = hg.zeros(c, dtype=dtype), hg.ones(c, dtype=dtype)
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3)
        (y * hg.tensor(g_np)).sum().backward()
        got = [y.numpy(), x.grad.numpy(), rm.numpy(), rv.numpy()]
        if affine:
            got += [w.grad.numpy(), b.grad.numpy()]
        results.append([a.copy() for a in got])
    tol = 2e-5 if dtype == np.float32 else 1e-11
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=tol, atol=tol * max(1.0, offset))


def test_batch_norm_compiled_runs_on_channels_last_and_gradchecks(monkeypatch):
    """The compiled path is the one taken for channels-last float64 input, and its gradients pass gradcheck."""
    from handgrad.engine.gradcheck import gradcheck
    from handgrad.functional import _norm_kernels

    monkeypatch.setattr(_kernels, "ENABLED", True)
    calls = []
    orig = _norm_kernels.forward
    monkeypatch.setattr(_norm_kernels, "forward", lambda *a: calls.append(1) or orig(*a))
    rng = np.random.default_rng(3)
    x = hg.tensor(rng.standard_normal((3, 5, 4, 2)), requires_grad=True)  # (N, H, W, C) memory
    w = hg.tensor(rng.standard_normal(2), requires_grad=True)
    b = hg.tensor(rng.standard_normal(2), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.batch_norm(x.permute(0, 3, 1, 2), None, None, w, b, training=True), (x, w, b))
    assert calls
