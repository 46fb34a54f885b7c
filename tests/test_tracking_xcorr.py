"""Cross-correlation ops: float64 finite differences and PyTorch's grouped ``conv2d`` as the oracle
(forward and both gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.engine.gradcheck import gradcheck
from handgrad.tracking.xcorr import xcorr_depthwise, xcorr_up

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _t(a, grad=True):
    return hg.tensor(a, requires_grad=grad)


@pytest.mark.parametrize("xs,zs", [((2, 3, 7, 8), (2, 3, 3, 2)), ((1, 4, 5, 5), (1, 4, 5, 5)),
                                   ((3, 2, 6, 4), (3, 2, 1, 1))])
def test_depthwise_gradcheck_and_torch(xs, zs):
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=xs), rng.normal(size=zs)
    assert gradcheck(lambda a, b: xcorr_depthwise(a, b), (_t(x), _t(z)))
    hx, hz = _t(x), _t(z)
    y = xcorr_depthwise(hx, hz)
    gy = rng.normal(size=y.shape)
    y.backward(hg.tensor(gy))
    tx, tz = torch.tensor(x, requires_grad=True), torch.tensor(z, requires_grad=True)
    B, C, H, W = xs
    ty = TF.conv2d(tx.reshape(1, B * C, H, W), tz.reshape(B * C, 1, *zs[2:]), groups=B * C).reshape(y.shape)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hz.grad.numpy(), tz.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xs,ks", [((2, 3, 7, 8), (2, 5, 3, 3, 2)), ((1, 2, 4, 4), (1, 3, 2, 4, 4))])
def test_up_channel_gradcheck_and_torch(xs, ks):
    rng = np.random.default_rng(1)
    x, k = rng.normal(size=xs), rng.normal(size=ks)
    assert gradcheck(lambda a, b: xcorr_up(a, b), (_t(x), _t(k)))
    hx, hk = _t(x), _t(k)
    y = xcorr_up(hx, hk)
    gy = rng.normal(size=y.shape)
    y.backward(hg.tensor(gy))
    tx, tk = torch.tensor(x, requires_grad=True), torch.tensor(k, requires_grad=True)
    B, C, H, W = xs
    O = ks[1]
    ty = TF.conv2d(tx.reshape(1, B * C, H, W), tk.reshape(B * O, C, *ks[3:]), groups=B).reshape(y.shape)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hk.grad.numpy(), tk.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_extreme_float32_inputs_match_torch():
    """A linear op does not saturate; at +-1e4 in float32 it must still agree to float32 precision."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1e4, 1e4, (2, 3, 9, 9)).astype(np.float32)
    z = rng.uniform(-1e4, 1e4, (2, 3, 4, 4)).astype(np.float32)
    y = xcorr_depthwise(_t(x, False), _t(z, False)).numpy()
    ty = TF.conv2d(torch.tensor(x).reshape(1, 6, 9, 9), torch.tensor(z).reshape(6, 1, 4, 4), groups=6)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ty.reshape(y.shape).numpy(), rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_errors_name_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"xcorr_depthwise: expected .* got \(2, 3, 5, 5\) and \(2, 4, 2, 2\)"):
        xcorr_depthwise(hg.zeros(2, 3, 5, 5), hg.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="larger than the search map"):
        xcorr_depthwise(hg.zeros(1, 1, 3, 3), hg.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"xcorr_up: expected"):
        xcorr_up(hg.zeros(2, 3, 5, 5), hg.zeros(2, 4, 2, 2))
