"""distillation_loss: PyTorch's KL divergence + cross-entropy, finite differences, the T^2 scaling, errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import handgrad as hg
from handgrad.functional.distillation import distillation_loss

rng = np.random.default_rng(0)


def t64(a, grad=True):
    return hg.tensor(a, dtype="float64", requires_grad=grad)


def torch_ref(s, t, y, T, alpha):
    kl = TF.kl_div(TF.log_softmax(s / T, 1), TF.softmax(t / T, 1), reduction="batchmean")
    return alpha * T * T * kl + (1 - alpha) * TF.cross_entropy(s, y)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 0.3), (3.0, 1.0), (2.0, 0.0)])
def test_matches_torch_kl_div_plus_cross_entropy(T, alpha):
    s_, t_ = rng.standard_normal((6, 5)) * 3, rng.standard_normal((6, 5)) * 3
    y_ = rng.integers(0, 5, 6)
    s, t = t64(s_), t64(t_)
    out = distillation_loss(s, t, hg.tensor(y_), temperature=T, alpha=alpha)
    ts, tt = torch.tensor(s_, requires_grad=True), torch.tensor(t_, requires_grad=True)
    ref = torch_ref(ts, tt, torch.tensor(y_), T, alpha)
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy(), rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-8, atol=1e-15)


def test_direct_formula_reductions_and_finite_differences():
    s_, t_, y_ = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    T, a = 2.5, 0.7

    def sm(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q, r = sm(t_ / T), sm(s_ / T), sm(s_)
    per = a * T * T * (p * np.log(p / q)).sum(1) - (1 - a) * np.log(r[np.arange(4), y_])
    none = distillation_loss(t64(s_), t64(t_), y_, T, a, reduction="none").numpy()
    np.testing.assert_allclose(none, per, rtol=1e-12)
    assert distillation_loss(t64(s_), t64(t_), y_, T, a, reduction="sum").item() == pytest.approx(per.sum(), rel=1e-12)
    w = rng.standard_normal(4)

    def f(sv, tv):
        return float((distillation_loss(t64(sv, False), t64(tv, False), y_, T, a, "none").numpy() * w).sum())

    s, t = t64(s_), t64(t_)
    (distillation_loss(s, t, y_, T, a, "none") * hg.tensor(w, dtype="float64")).sum().backward()
    for x, arr, which in ((s, s_, 0), (t, t_, 1)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            hi, lo = arr.copy(), arr.copy()
            hi[idx] += 1e-6
            lo[idx] -= 1e-6
            num[idx] = ((f(hi, t_) - f(lo, t_)) if which == 0 else (f(s_, hi) - f(s_, lo))) / 2e-6
        np.testing.assert_allclose(x.grad.numpy(), num, rtol=1e-6, atol=1e-9)


def test_perfect_imitation_costs_nothing_and_pure_soft_mode():
    z = rng.standard_normal((5, 4))
    assert distillation_loss(t64(z), t64(z), None, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-14)


def test_t_squared_scaling_keeps_the_soft_gradient_magnitude():
    """Without the T^2 factor the soft gradient would fall as 1/T^2 (x4 from T=50 to T=100); with it, it stays."""
    s_, t_ = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    grads = {}
    for T in (50.0, 100.0):
        s = t64(s_)
        distillation_loss(s, t64(t_, False), None, T, 1.0).backward()
        grads[T] = s.grad.numpy()
    ratio = np.linalg.norm(grads[50.0]) / np.linalg.norm(grads[100.0])
    assert ratio == pytest.approx(1.0, abs=0.01)
    # the high-temperature limit: (s - t, centred per row) / (C N) -- logit matching, as the paper derives
    c = (s_ - s_.mean(1, keepdims=True)) - (t_ - t_.mean(1, keepdims=True))
    np.testing.assert_allclose(grads[100.0], c / 6 / 3, rtol=0.03, atol=1e-4)


def test_errors():
    s, t = t64(np.zeros((3, 4))), t64(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"distillation_loss: student_logits \(3, 4\) and teacher_logits \(3, 5\)"):
        distillation_loss(s, t64(np.zeros((3, 5))), [0, 1, 2])
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        distillation_loss(s, t, [0, 1, 4])
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        distillation_loss(s, t, [0, -1, 2])
    with pytest.raises(ValueError, match=r"target must be \(N,\) = \(3,\)"):
        distillation_loss(s, t, [0, 1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(s, t, [0, 1, 2], temperature=0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        distillation_loss(s, t, [0, 1, 2], alpha=1.5)
    with pytest.raises(ValueError, match="needs alpha=1"):
        distillation_loss(s, t, None, alpha=0.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        distillation_loss(s, t, [0, 1, 2], reduction="batchmean")
    with pytest.raises(TypeError, match="student is float64 but teacher is float32"):
        distillation_loss(s, hg.zeros(3, 4), [0, 1, 2])


def test_project_gradcheck_full_jacobian():
    r = np.random.default_rng(7)
    s, t = t64(r.standard_normal((3, 4))), t64(r.standard_normal((3, 4)))
    assert hg.gradcheck(lambda u, v: distillation_loss(u, v, [0, 3, 1], 3.0, 0.6, reduction="none"), (s, t))
