"""2-D LSTM: the diagonal-sweep op against a naive cell-by-cell loop, PyTorch autograd of that loop, and
central differences; the four-direction layer and its errors."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.recurrent.mdlstm import MDLSTM2d, mdlstm2d_scan

R, C, B, I, H = 3, 4, 2, 3, 2


def _naive(x, w, u1, u2, b, lib):
    """Straight from the equations, one cell at a time in row-major order (torch or numpy)."""
    zeros = lib.zeros((B, H), dtype=x.dtype) if lib is np else torch.zeros(B, H, dtype=x.dtype)
    h = [[None] * C for _ in range(R)]
    c = [[None] * C for _ in range(R)]
    sig = (lambda z: 1 / (1 + np.exp(-z))) if lib is np else torch.sigmoid
    tanh = np.tanh if lib is np else torch.tanh
    for i in range(R):
        for j in range(C):
            hu, cu = (h[i - 1][j], c[i - 1][j]) if i else (zeros, zeros)
            hl, cl = (h[i][j - 1], c[i][j - 1]) if j else (zeros, zeros)
            z = x[i, j] @ w.T + hu @ u1.T + hl @ u2.T + b
            ig, f1, f2, o = (sig(z[:, k * H:(k + 1) * H]) for k in range(4))
            g = tanh(z[:, 4 * H:])
            c[i][j] = ig * g + f1 * cu + f2 * cl
            h[i][j] = o * tanh(c[i][j])
    rows = [lib.stack(r) for r in h]
    return lib.stack(rows)


def _args(seed=0):
    r = np.random.default_rng(seed)
    shapes = [(R, C, B, I), (5 * H, I), (5 * H, H), (5 * H, H), (5 * H,)]
    return [hg.tensor(r.normal(0, 0.8, s), requires_grad=True) for s in shapes]


def test_forward_equals_naive_loop():
    args = _args()
    out = mdlstm2d_scan(*args)
    ref = _naive(*[a.numpy() for a in args], np)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_all_gradients_equal_torch_autograd_of_the_naive_loop():
    args = _args(1)
    G = np.random.default_rng(2).normal(size=(R, C, B, H))
    (mdlstm2d_scan(*args) * hg.tensor(G)).sum().backward()
    tt = [torch.tensor(a.numpy(), requires_grad=True) for a in args]
    (_naive(*tt, torch) * torch.tensor(G)).sum().backward()
    for ours, theirs in zip(args, tt):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_gradcheck_float64():
    assert hg.gradcheck(mdlstm2d_scan, tuple(_args(3)))


def test_four_directions_see_the_whole_image():
    hg.manual_seed(0)
    layer = MDLSTM2d(I, H, directions=4).double()
    x = hg.randn(B, R, C, I, dtype="float64", requires_grad=True)
    y = layer(x)
    assert y.shape == (B, R, C, 4 * H)
    y[:, 0, 0].sum().backward()  # the top-left output depends on every pixel through the other corners
    assert (np.abs(x.grad.numpy()).sum(axis=(0, 3)) > 0).all()
    one = MDLSTM2d(I, H, directions=1).double()
    x2 = hg.randn(B, R, C, I, dtype="float64", requires_grad=True)
    one(x2)[:, 0, 0].sum().backward()
    g = np.abs(x2.grad.numpy()).sum(axis=(0, 3))
    assert g[0, 0] > 0 and (g.reshape(-1)[1:] == 0).all()  # causal: only the top-left pixel


def test_errors():
    args = _args()
    with pytest.raises(ValueError, match="expected weights"):
        mdlstm2d_scan(args[0], args[1][:5], *args[2:])
    with pytest.raises(ValueError, match="directions"):
        MDLSTM2d(3, 2, directions=3)
    with pytest.raises(ValueError, match=r"MDLSTM2d: expected input \(B, H, W, 3\)"):
        MDLSTM2d(3, 2)(hg.randn(2, 4, 4, 5))
