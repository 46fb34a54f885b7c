"""Attention sub-networks: forward and every gradient against PyTorch autograd of the same equations,
central differences in float64, and padding that never receives weight."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.seq2seq.attention import AdditiveAttention, MultiplicativeAttention

B, S, Q, D, A = 3, 5, 4, 6, 7


def _setup(seed=0):
    hg.manual_seed(seed)
    r = np.random.default_rng(seed)
    q = hg.tensor(r.normal(size=(B, Q)), requires_grad=True)
    K = hg.tensor(r.normal(size=(B, S, D)), requires_grad=True)
    mask = np.ones((B, S), bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    C = r.normal(size=(B, D))
    return q, K, mask, C


def _torch_attention(kind, q, K, mask, params):
    if kind == "additive":
        Wq, Wk, b, v = params
        e = torch.tanh(K @ Wk + b + (q @ Wq)[:, None]) @ v
    elif kind == "general":
        (W,) = params
        e = (K @ (q @ W)[:, :, None])[..., 0]
    else:
        e = (K @ q[:, :, None])[..., 0]
    a = e.masked_fill(~torch.tensor(mask), -float("inf")).softmax(-1)
    return (a[:, None] @ K)[:, 0], a


@pytest.mark.parametrize("kind", ["additive", "general", "dot"])
def test_attention_matches_torch(kind):
    q, K, mask, C = _setup()
    if kind == "additive":
        att = AdditiveAttention(Q, D, A).double()
        names = ("W_q", "W_k", "b", "v")
    else:
        qs = D if kind == "dot" else Q
        q = hg.tensor(np.random.default_rng(1).normal(size=(B, qs)), requires_grad=True)
        att = MultiplicativeAttention(qs, D, kind=kind).double()
        names = ("W",) if kind == "general" else ()
    c, a = att(q, K, mask)
    (c * hg.tensor(C)).sum().backward()
    tq = torch.tensor(q.numpy(), requires_grad=True)
    tK = torch.tensor(K.numpy(), requires_grad=True)
    tp = [torch.tensor(getattr(att, n).numpy(), requires_grad=True) for n in names]
    tc, ta = _torch_attention(kind, tq, tK, mask, tp)
    (tc * torch.tensor(C)).sum().backward()
    np.testing.assert_allclose(c.numpy(), tc.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.numpy(), ta.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.grad.numpy(), tq.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(K.grad.numpy(), tK.grad.numpy(), rtol=1e-9, atol=1e-12)
    for n, t in zip(names, tp):
        np.testing.assert_allclose(getattr(att, n).grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert (a.numpy()[~mask] == 0).all()  # padding never gets weight
    np.testing.assert_allclose(a.numpy().sum(1), 1.0)


@pytest.mark.parametrize("kind", ["additive", "general"])
def test_attention_gradcheck(kind):
    q, K, mask, _ = _setup(2)
    att = (AdditiveAttention(Q, D, A) if kind == "additive" else MultiplicativeAttention(Q, D)).double()
    assert hg.gradcheck(lambda q, K: att(q, K, mask)[0], (q, K))


def test_attention_errors():
    q, K, mask, _ = _setup()
    att = AdditiveAttention(Q, D, A).double()
    with pytest.raises(ValueError, match="mask"):
        att(q, K, mask[:, :2])
    bad = mask.copy()
    bad[0] = False
    with pytest.raises(ValueError, match="all padding"):
        att(q, K, bad)
    with pytest.raises(ValueError, match="query"):
        att(q[0], K, mask)
    with pytest.raises(ValueError, match="dot"):
        MultiplicativeAttention(3, 4, kind="dot")


@pytest.mark.parametrize("kind", ["additive", "general"])
def test_all_steps_at_once_equal_step_by_step(kind):
    q, K, mask, _ = _setup(4)
    att = (AdditiveAttention(Q, D, A) if kind == "additive" else MultiplicativeAttention(Q, D)).double()
    qs = hg.tensor(np.random.default_rng(5).normal(size=(B, 3, Q)), requires_grad=True)
    c_all, a_all = att(qs, K, mask)
    assert c_all.shape == (B, 3, D) and a_all.shape == (B, 3, S)
    for t in range(3):
        c_t, a_t = att(qs[:, t], K, mask)
        np.testing.assert_allclose(c_all.numpy()[:, t], c_t.numpy(), rtol=1e-12)
        np.testing.assert_allclose(a_all.numpy()[:, t], a_t.numpy(), rtol=1e-12)
    assert hg.gradcheck(lambda qs, K: att(qs, K, mask)[0], (qs, K))
