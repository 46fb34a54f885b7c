"""Xiao et al.'s noisy-label model: posteriors by brute force, EM monotone, the NLL op vs PyTorch and FD."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.robust import (
    FASHION_CONFUSING,
    NoisyLabelModel,
    confusion_from_pairs,
    corrupt_labels,
    joint_posterior,
    log_likelihood,
    noisy_label_nll,
    noisy_label_probs,
    transition_matrices,
    update_confusion,
)

rng = np.random.default_rng(0)
L = 4


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def random_confusion(L=L, seed=0):
    r = np.random.default_rng(seed)
    c = r.random((L, L)) + 0.05
    np.fill_diagonal(c, 0)
    return c / c.sum(1, keepdims=True)


def brute_p_noisy(py, pz, C, yt):
    """p(y~ | x) summed term by term from the model's three cases."""
    out = 0.0
    for y in range(len(py)):
        for z in range(3):
            if z == 0:
                lik = float(yt == y)
            elif z == 1:
                lik = float(yt != y) / (len(py) - 1)
            else:
                lik = C[y, yt]
            out += lik * py[y] * pz[z]
    return out


def test_transition_matrices_rows_are_distributions():
    T = transition_matrices(random_confusion())
    assert T.shape == (3, L, L)
    np.testing.assert_allclose(T.sum(2), 1.0)
    np.testing.assert_allclose(T[0], np.eye(L))
    assert T[1][0, 0] == 0 and T[1][0, 1] == pytest.approx(1 / 3)


def test_posterior_and_likelihood_against_brute_force():
    N = 6
    py, pz = softmax(rng.standard_normal((N, L))), softmax(rng.standard_normal((N, 3)))
    C, yt = random_confusion(), rng.integers(0, L, N)
    probs = noisy_label_probs(py, pz, C)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    for n in range(N):
        for k in range(L):
            assert probs[n, k] == pytest.approx(brute_p_noisy(py[n], pz[n], C, k), rel=1e-12)
    q = joint_posterior(py, pz, yt, C)
    for n in range(N):
        for y in range(L):
            for z in range(3):
                lik = [float(yt[n] == y), float(yt[n] != y) / (L - 1), C[y, yt[n]]][z]
                assert q[n, y, z] == pytest.approx(lik * py[n, y] * pz[n, z] / probs[n, yt[n]], rel=1e-12, abs=1e-15)
    assert log_likelihood(py, pz, yt, C) == pytest.approx(np.log(probs[np.arange(N), yt]).sum(), rel=1e-12)
    # a known clean label pins q(y) to it; then q(z) is p(y~ | y, z) p(z | x), normalised
    clean = np.array([2, -1, -1, 0, -1, 1])
    qc = joint_posterior(py, pz, yt, C, clean)
    for n in np.nonzero(clean >= 0)[0]:
        qy = qc[n].sum(1)
        assert qy[clean[n]] == pytest.approx(1.0) and qy.sum() == pytest.approx(1.0)
        lik = np.array([float(yt[n] == clean[n]), float(yt[n] != clean[n]) / (L - 1), C[clean[n], yt[n]]])
        np.testing.assert_allclose(qc[n].sum(0), lik * pz[n] / (lik * pz[n]).sum(), rtol=1e-12)
    np.testing.assert_allclose(qc[1], q[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_on_c_never_lowers_the_likelihood_for_fixed_networks(seed):
    r = np.random.default_rng(seed)
    N = 300
    py, pz = softmax(r.standard_normal((N, L)) * 2), softmax(r.standard_normal((N, 3)))
    truth = random_confusion(seed=seed + 10)
    y = np.array([r.choice(L, p=p) for p in py])
    yt = np.array([r.choice(L, p=truth[c]) if r.random() < 0.5 else c for c in y])
    C = np.full((L, L), 1.0 / L)
    lls = [log_likelihood(py, pz, yt, C)]
    for _ in range(15):
        C = update_confusion(joint_posterior(py, pz, yt, C), yt, smoothing=0.0)
        lls.append(log_likelihood(py, pz, yt, C))
    assert np.all(np.diff(lls) >= -1e-9) and lls[-1] > lls[0]


def test_full_em_with_free_per_sample_predictions_is_monotone():
    """With p(y|x), p(z|x) as free tables (an infinitely flexible network) the M-step sets them to q: EM."""
    N = 50
    py, pz = softmax(rng.standard_normal((N, L))), softmax(rng.standard_normal((N, 3)))
    yt = rng.integers(0, L, N)
    C = random_confusion(seed=3)
    lls = [log_likelihood(py, pz, yt, C)]
    for _ in range(10):
        q = joint_posterior(py, pz, yt, C)
        py, pz, C = q.sum(2), q.sum(1), update_confusion(q, yt, smoothing=0.0)
        lls.append(log_likelihood(py, pz, yt, C))
    assert np.all(np.diff(lls) >= -1e-12) and lls[-1] > lls[0]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_noisy_label_nll_matches_torch_autograd(reduction):
    N = 5
    yl_, zl_ = rng.standard_normal((N, L)), rng.standard_normal((N, 3))
    yt, C = rng.integers(0, L, N), random_confusion()
    yl = hg.tensor(yl_, dtype="float64", requires_grad=True)
    zl = hg.tensor(zl_, dtype="float64", requires_grad=True)
    out = noisy_label_nll(yl, zl, yt, C, reduction)
    T = torch.tensor(transition_matrices(C))
    tyl, tzl = torch.tensor(yl_, requires_grad=True), torch.tensor(zl_, requires_grad=True)
    probs = torch.einsum("nz,ny,zyk->nk", tzl.softmax(1), tyl.softmax(1), T)
    nll = -probs[torch.arange(N), torch.tensor(yt)].log()
    ref = {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    w = rng.standard_normal(out.shape)
    (out * hg.tensor(w, dtype="float64")).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(yl.grad.numpy(), tyl.grad.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(zl.grad.numpy(), tzl.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_nll_gradient_is_p_minus_posterior_and_finite_differences():
    N = 4
    yl_, zl_ = rng.standard_normal((N, L)), rng.standard_normal((N, 3))
    yt, C = rng.integers(0, L, N), random_confusion()
    yl = hg.tensor(yl_, dtype="float64", requires_grad=True)
    zl = hg.tensor(zl_, dtype="float64", requires_grad=True)
    noisy_label_nll(yl, zl, yt, C, "sum").backward()
    q = joint_posterior(softmax(yl_), softmax(zl_), yt, C)
    np.testing.assert_allclose(yl.grad.numpy(), softmax(yl_) - q.sum(2), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(zl.grad.numpy(), softmax(zl_) - q.sum(1), rtol=1e-10, atol=1e-14)

    def f(a, b):
        return noisy_label_nll(hg.tensor(a, dtype="float64"), hg.tensor(b, dtype="float64"), yt, C, "sum").item()

    for which, arr in ((0, yl_), (1, zl_)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            hi, lo = arr.copy(), arr.copy()
            hi[idx] += 1e-6
            lo[idx] -= 1e-6
            num[idx] = ((f(hi, zl_) - f(lo, zl_)) if which == 0 else (f(yl_, hi) - f(yl_, lo))) / 2e-6
        np.testing.assert_allclose((yl, zl)[which].grad.numpy(), num, rtol=1e-6, atol=1e-9)


def test_corrupt_labels_rates_and_types():
    y = np.random.default_rng(0).integers(0, 10, 20000)
    for mode in ("symmetric", "confusing", "mixed"):
        noisy, z = corrupt_labels(y, 0.4, mode, 10, np.random.default_rng(1))
        assert (noisy != y).mean() == pytest.approx(0.4, abs=0.015)
        np.testing.assert_array_equal(noisy != y, z > 0)
        if mode == "symmetric":
            assert set(np.unique(z)) == {0, 1}
            # uniform over the 9 other labels
            counts = np.bincount((noisy[z == 1] - y[z == 1]) % 10, minlength=10)
            assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].max()
        if mode == "confusing":
            assert all(FASHION_CONFUSING[a] == b for a, b in zip(y[z == 2], noisy[z == 2]))
        if mode == "mixed":
            assert (z == 1).mean() == pytest.approx(0.2, abs=0.015) and (z == 2).mean() == pytest.approx(0.2, abs=0.015)


def test_confusion_from_pairs_and_model_buffer():
    clean = np.array([0, 0, 0, 1, 1, 2])
    noisy = np.array([1, 1, 0, 2, 1, 0])
    C = confusion_from_pairs(clean, noisy, 3, smoothing=0.0 + 1e-9)
    np.testing.assert_allclose(C[0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(C[1], [0, 0, 1], atol=1e-6)
    m = NoisyLabelModel(hg.nn.Module(), hg.nn.Module(), 3)
    np.testing.assert_allclose(m.confusion, (1 - np.eye(3)) / 2)
    m.confusion = C
    assert "confusion_matrix" in m.state_dict()
    np.testing.assert_allclose(m.state_dict()["confusion_matrix"], C)


def test_errors():
    py, pz = softmax(rng.standard_normal((3, L))), softmax(rng.standard_normal((3, 3)))
    C = random_confusion()
    with pytest.raises(ValueError, match=r"noisy labels hold \[4\] outside \[0, 4\)"):
        joint_posterior(py, pz, [0, 4, 1], C)
    with pytest.raises(ValueError, match=r"noisy labels hold \[-1\] outside"):
        noisy_label_nll(hg.tensor(py), hg.tensor(pz), [0, -1, 1], C)
    with pytest.raises(ValueError, match=r"C is \(3, 3\) but the clean path predicts 4 classes"):
        noisy_label_probs(py, pz, np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="rows that sum to 1"):
        transition_matrices(np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"expected y_logits \(N, L\) and z_logits \(N, 3\)"):
        noisy_label_nll(hg.tensor(py), hg.tensor(py), [0, 1, 1], C)
    with pytest.raises(ValueError, match=r"clean labels hold \[7\] outside"):
        joint_posterior(py, pz, [0, 1, 1], C, clean=[7, -1, -1])
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        corrupt_labels([0, 1], 1.5)
    with pytest.raises(ValueError, match="different partner for classes"):
        corrupt_labels([0, 1], 0.5, "confusing", 3, confusing={0: 1, 1: 1, 2: 0})
    with pytest.raises(ValueError, match=r"labels hold \[10\] outside \[0, 10\)"):
        corrupt_labels([0, 10], 0.5)


def test_project_gradcheck_full_jacobian():
    r = np.random.default_rng(9)
    yl = hg.tensor(r.standard_normal((3, L)), dtype="float64", requires_grad=True)
    zl = hg.tensor(r.standard_normal((3, 3)), dtype="float64", requires_grad=True)
    assert hg.gradcheck(lambda a, b: noisy_label_nll(a, b, [0, 3, 2], random_confusion(), "none"), (yl, zl))
