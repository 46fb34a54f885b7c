"""Clockwork RNN: the fused op against a naive step loop, against PyTorch autograd of the same equations,
and against central differences; the block-triangular structure and the module clocks."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.recurrent.clockwork import ClockworkRNN, active_units, clockwork_mask, clockwork_sequence

K, PERIODS = 2, (1, 2, 4)
H = K * len(PERIODS)


def _inputs(T=9, B=2, I=3, seed=0):
    r = np.random.default_rng(seed)
    arrs = [r.normal(size=(T, B, I)), r.normal(size=(B, H)), r.normal(size=(H, I)) * 0.5,
            r.normal(size=(H, H)) * 0.5, r.normal(size=H) * 0.1]
    return [hg.tensor(a, requires_grad=True) for a in arrs]


def _torch_clockwork(x, h0, wi, wh, b):
    M = torch.tensor(clockwork_mask(K, PERIODS, dtype=np.float64))
    h, out = h0, []
    for t in range(x.shape[0]):
        n = active_units(t, K, PERIODS)
        new = torch.tanh(h @ (wh * M).T + x[t] @ wi.T + b)
        h = torch.cat([new[:, :n], h[:, n:]], dim=1)
        out.append(h)
    return torch.stack(out)


def test_clocks_and_mask():
    assert [active_units(t, K, PERIODS) for t in range(9)] == [6, 2, 4, 2, 6, 2, 4, 2, 6]
    M = clockwork_mask(K, PERIODS)
    assert M[0, 5] == 1 and M[5, 0] == 0  # slow modules feed fast ones, never the reverse
    assert M.sum() == K * K * 6  # 3 diagonal + 3 upper blocks


def test_forward_and_all_gradients_match_torch_autograd():
    x, h0, wi, wh, b = _inputs()
    C = np.random.default_rng(1).normal(size=(9, 2, H))
    y = clockwork_sequence(x, h0, wi, wh, b, K, PERIODS)
    (y * hg.tensor(C)).sum().backward()
    tt = [torch.tensor(t.numpy(), requires_grad=True) for t in (x, h0, wi, wh, b)]
    ty = _torch_clockwork(*tt)
    (ty * torch.tensor(C)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    M = clockwork_mask(K, PERIODS, dtype=np.float64)
    for ours, theirs, m in zip((x, h0, wi, wh, b), tt, (1, 1, 1, M, 1)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy() * m, rtol=1e-9, atol=1e-12)


def test_gradcheck_float64():
    args = _inputs(T=6, B=2, I=2, seed=3)
    assert hg.gradcheck(lambda *a: clockwork_sequence(*a, K, PERIODS), tuple(args))


def test_inactive_modules_hold_their_state():
    hg.manual_seed(0)
    cw = ClockworkRNN(3, K, 3).double()
    x = hg.randn(8, 2, 3, dtype="float64")
    out, h_n = cw(x)
    o = out.numpy()
    np.testing.assert_array_equal(o[1, :, 4:], o[0, :, 4:])  # slowest module (period 4) frozen at t=1..3
    np.testing.assert_array_equal(o[3, :, 4:], o[0, :, 4:])
    assert not np.allclose(o[4, :, 4:], o[3, :, 4:])
    np.testing.assert_array_equal(h_n.numpy(), o[-1])
    assert cw.num_effective_parameters() == 6 * 3 + 24 + 6


def test_errors_are_clear():
    x, h0, wi, wh, b = _inputs()
    with pytest.raises(ValueError, match="expected W_I"):
        clockwork_sequence(x, h0, wi, wh[:4], b, K, PERIODS)
    with pytest.raises(ValueError, match="divide"):
        clockwork_sequence(x, h0, wi, wh, b, K, (1, 3, 4))
    with pytest.raises(ValueError, match="ClockworkRNN"):
        ClockworkRNN(3, K, 3)(hg.randn(4, 2, 5))
