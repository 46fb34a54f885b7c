"""The compiled ReLU (``handgrad.functional._act_kernels``) against the engine's NumPy code, bit for bit.

``ReLUFunction.kernel`` is the switch: None runs the NumPy reference. Inputs are large enough for the kernel
(``MIN_SIZE``), in C order and in the channels-last layout a conv returns, with NaN, +-inf, -0.0 and
+-1e4 values, at 1 and 2 BLAS threads (the split over ``_threads``).
"""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.engine.ops.unary import ReLUFunction
from handgrad.functional import _act_kernels

pytestmark = pytest.mark.skipif(_act_kernels.njit is None, reason="numba kernels disabled")


def _input(dtype, layout: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = (1e4 * rng.standard_normal((6, 12, 20, 16))).astype(dtype)  # NHWC memory
    a.reshape(-1)[:7] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-30, -1e-30]
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if layout == "nchw" else a.transpose(0, 3, 1, 2)


def _relu(x: np.ndarray, gy: np.ndarray, compiled: bool) -> tuple[np.ndarray, np.ndarray]:
    old = ReLUFunction.kernel
    ReLUFunction.kernel = _act_kernels if compiled else None
    try:
        t = hg.tensor(x, requires_grad=True)
        y = t.relu()
        y.backward(hg.tensor(gy))
    finally:
        ReLUFunction.kernel = old
    return y.numpy(), t.grad.numpy()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_relu_equals_numpy(dtype, layout, threads):
    from threadpoolctl import threadpool_limits

    x = _input(dtype, layout)
    assert x.size >= _act_kernels.MIN_SIZE
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    gy.reshape(-1)[-3:] = [np.inf, -np.inf, np.nan]
    gy = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if layout != "nchw" else gy
    with threadpool_limits(threads, user_api="blas"):
        y1, mask = _act_kernels.forward(x)  # the kernel applies to both layouts
        g1 = _act_kernels.backward(gy, mask)
        yo, go = _relu(x, gy, True)  # through the op (hg.tensor copies to C order)
    assert y1.dtype == dtype and y1.strides == x.strides and g1.strides == gy.strides  # the memory layout kept
    np.testing.assert_array_equal(y1, np.maximum(x, 0))
    np.testing.assert_array_equal(np.signbit(y1), np.signbit(np.maximum(x, 0)))  # -0.0 -> +0.0 as in NumPy
    np.testing.assert_array_equal(mask, x > 0)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(g1, gy * (x > 0))
    y0, g0 = _relu(x, gy, False)
    np.testing.assert_array_equal(yo, y0)
    np.testing.assert_array_equal(go, g0)


def test_compiled_relu_falls_back_where_it_does_not_apply():
    """Small arrays, integer arrays, non-dense views and a gradient laid out unlike the input: NumPy's numbers."""
    small = np.linspace(-1, 1, 64, dtype=np.float32)
    assert _act_kernels.forward(small) is None
    assert _act_kernels.forward(np.arange(1 << 15)) is None
    strided = np.zeros((256, 256), np.float32)[:, ::2]
    assert _act_kernels.forward(strided) is None
    x = _input(np.float32, "nchw")
    y, mask = _act_kernels.forward(x)
    other = np.asfortranarray(np.ones(x.shape, np.float32))
    assert _act_kernels.backward(other, mask) is None
    yk, gk = _relu(x, other, True)  # the op still gives NumPy's gradient through the fallback
    np.testing.assert_array_equal(gk, other * (x > 0))


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_relu_backward_reads_a_cropped_gradient(threads):
    """The gradient a conv returns for a padded input is a cropped view (not dense): read row by row."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 16, 12, 16)).astype(np.float32).transpose(0, 3, 1, 2)  # channels-last memory
    big = rng.standard_normal((8, 18, 14, 16)).astype(np.float32)
    gy = big[:, 1:17, 1:13, :].transpose(0, 3, 1, 2)
    with threadpool_limits(threads, user_api="blas"):
        y, mask = _act_kernels.forward(x)
        gx = _act_kernels.backward(gy, mask)
    assert gx is not None and gx.strides == x.strides
    np.testing.assert_array_equal(gx, gy * (x > 0))
