"""HM-LSTM cell: COPY / UPDATE / FLUSH exactly as the paper's cases for binary boundaries, the backward
against torch autograd of the same formula and central differences (surrogate hard-sigmoid forward), the
straight-through rule, and the multi-layer model."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.recurrent.hmrnn import HMLSTM, hmlstm_cell, slope_schedule

B, H, HB, HA = 3, 4, 5, 2
G = 4 * H + 1


def _args(seed=0, z_prev=None, z_below=None):
    r = np.random.default_rng(seed)
    zp = r.uniform(0, 1, (B, 1)) if z_prev is None else np.full((B, 1), float(z_prev))
    zb = r.uniform(0, 1, (B, 1)) if z_below is None else np.full((B, 1), float(z_below))
    arrs = [r.normal(size=(B, H)), r.normal(size=(B, H)), zp, r.normal(size=(B, HB)), zb, r.normal(size=(B, HA)),
            r.normal(0, 0.5, (G, HB)), r.normal(0, 0.5, (G, H)), r.normal(0, 0.5, (G, HA)), r.normal(0, 0.3, G)]
    return [hg.tensor(a, requires_grad=True) for a in arrs]


def _paper_cases(h_prev, c_prev, zp, h_below, zb, h_above, W, U, Utd, b, slope):
    """The paper's equations with the three operations as explicit branches (binary z only)."""
    s = h_prev @ U.T + zp * (h_above @ Utd.T) + zb * (h_below @ W.T) + b
    sig = 1 / (1 + np.exp(-s))
    f, i, o, g = sig[:, :H], sig[:, H:2 * H], sig[:, 2 * H:3 * H], np.tanh(s[:, 3 * H:4 * H])
    c, h = np.empty_like(c_prev), np.empty_like(h_prev)
    for n in range(B):
        if zp[n, 0] == 1:  # FLUSH
            c[n] = i[n] * g[n]
            h[n] = o[n] * np.tanh(c[n])
        elif zb[n, 0] == 1:  # UPDATE
            c[n] = f[n] * c_prev[n] + i[n] * g[n]
            h[n] = o[n] * np.tanh(c[n])
        else:  # COPY
            c[n], h[n] = c_prev[n], h_prev[n]
    z = (np.clip((slope * s[:, 4 * H:] + 1) / 2, 0, 1) > 0.5).astype(float)
    return h, c, z


@pytest.mark.parametrize("zp,zb", [(1, 0), (1, 1), (0, 1), (0, 0)])
def test_copy_update_flush_match_the_papers_cases(zp, zb):
    args = _args(1, zp, zb)
    h, c, z = hmlstm_cell(*args, slope=2.0)
    rh, rc, rz = _paper_cases(*[a.numpy() for a in args], 2.0)
    np.testing.assert_allclose(h.numpy(), rh, rtol=1e-12)
    np.testing.assert_allclose(c.numpy(), rc, rtol=1e-12)
    np.testing.assert_array_equal(z.numpy(), rz)
    assert set(np.unique(z.numpy())) <= {0.0, 1.0}


def _torch_cell(h_prev, c_prev, zp, h_below, zb, h_above, W, U, Utd, b, slope):
    s = h_prev @ U.T + zp * (h_above @ Utd.T) + zb * (h_below @ W.T) + b
    f, i, o = (torch.sigmoid(s[:, k * H:(k + 1) * H]) for k in range(3))
    g = torch.tanh(s[:, 3 * H:4 * H])
    z = torch.clamp((slope * s[:, 4 * H:] + 1) / 2, 0, 1)
    c = zp * i * g + (1 - zp) * (zb * (f * c_prev + i * g) + (1 - zb) * c_prev)
    k = (1 - zp) * (1 - zb)
    return k * h_prev + (1 - k) * o * torch.tanh(c), c, z


def test_surrogate_backward_matches_torch_and_finite_differences():
    args = _args(2)
    C = [np.random.default_rng(3).normal(size=s) for s in ((B, H), (B, H), (B, 1))]
    outs = hmlstm_cell(*args, slope=1.5, surrogate=True)
    sum(((o * hg.tensor(w)).sum() for o, w in zip(outs, C)), hg.tensor(0.0, dtype="float64")).backward()
    tt = [torch.tensor(a.numpy(), requires_grad=True) for a in args]
    touts = _torch_cell(*tt, 1.5)
    sum((o * torch.tensor(w)).sum() for o, w in zip(touts, C)).backward()
    for o, to in zip(outs, touts):
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), rtol=1e-12, atol=1e-14)
    for a, ta in zip(args, tt):
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert hg.gradcheck(lambda *a: hmlstm_cell(*a, slope=1.5, surrogate=True), tuple(_args(4)))


def test_straight_through_passes_the_hard_sigmoid_slope():
    args = _args(5, 1, 1)
    _, _, z = hmlstm_cell(*args, slope=0.5)
    z.sum().backward()
    # dz/db_z = a/2 inside the linear part of the hard sigmoid, whatever the step did
    s_z = (args[0].numpy() @ args[7].numpy().T + args[5].numpy() @ args[8].numpy().T
           + args[3].numpy() @ args[6].numpy().T + args[9].numpy())[:, -1]
    inside = np.abs(0.5 * s_z) < 1
    assert args[9].grad.numpy()[-1] == pytest.approx(0.25 * inside.sum())


def test_model_shapes_boundaries_binary_and_slope_schedule():
    hg.manual_seed(0)
    m = HMLSTM(3, (5, 4)).double()
    x = hg.randn(7, 2, 3, dtype="float64")
    hs, z, state = m(x)
    assert len(state) == 3 and state[0][1].shape == (2, 4)
    assert [h.shape for h in hs] == [(7, 2, 5), (7, 2, 4)] and z.shape == (7, 2, 2)
    assert set(np.unique(z.numpy())) <= {0.0, 1.0}
    (hs[1].sum() + hs[0].sum()).backward()
    assert all(p.grad is not None for p in m.parameters())
    assert slope_schedule(0) == 1.0 and slope_schedule(10**9) == 5.0
    with pytest.raises(ValueError, match=r"HMLSTM: expected input \(T, B, 3\)"):
        m(hg.randn(7, 2, 4, dtype="float64"))
    with pytest.raises(ValueError, match="expected weights"):
        a = _args()
        hmlstm_cell(*a[:6], a[6][:, :2], *a[7:])
