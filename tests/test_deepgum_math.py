"""DeepGUM's Gaussian-uniform mixture: E/M formulas, EM monotonicity, robust losses vs formulas, PyTorch, FD."""

import math

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.robust import GaussianUniformMixture, gum_loss, mad_scale, tukey_biweight_loss

rng = np.random.default_rng(0)


def contaminated(n_in=150, n_out=50, dim=1, seed=0):
    r = np.random.default_rng(seed)
    inl = r.standard_normal((n_in, dim)) * 0.3
    out = r.uniform(-8, 8, (n_out, dim))
    return np.concatenate([inl, out]), np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)]


def test_e_step_and_likelihood_direct_formula_1d_and_2d():
    d = rng.standard_normal(7) * 2
    g = GaussianUniformMixture(rho=0.3, sigma=0.7, gamma=0.05)
    gauss = np.exp(-0.5 * d**2 / 0.7) / np.sqrt(2 * np.pi * 0.7)
    mix = 0.3 * gauss + 0.7 * 0.05
    np.testing.assert_allclose(g.e_step(d), 0.3 * gauss / mix, rtol=1e-12)
    assert g.log_likelihood(d) == pytest.approx(np.log(mix).sum(), rel=1e-12)
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    d2 = rng.standard_normal((5, 2))
    g2 = GaussianUniformMixture(rho=0.6, sigma=S, gamma=0.01)
    Si = np.linalg.inv(S)
    gauss2 = np.exp(-0.5 * np.einsum("ni,ij,nj->n", d2, Si, d2)) / (2 * np.pi * np.sqrt(np.linalg.det(S)))
    mix2 = 0.6 * gauss2 + 0.4 * 0.01
    np.testing.assert_allclose(g2.e_step(d2), 0.6 * gauss2 / mix2, rtol=1e-12)
    assert g2.log_likelihood(d2) == pytest.approx(np.log(mix2).sum(), rel=1e-12)


def test_m_step_formulas():
    d = rng.standard_normal((20, 2))
    r = rng.random(20)
    g = GaussianUniformMixture(rho=0.5, sigma=np.eye(2), gamma=0.01, gamma_update="moments")
    g.m_step(d, r)
    assert g.rho == pytest.approx(r.mean(), rel=1e-12)
    np.testing.assert_allclose(g.sigma, (r[:, None, None] * np.einsum("ni,nj->nij", d, d)).sum(0) / r.sum(), rtol=1e-12)
    w = 1 - r
    c1 = (w[:, None] * d).sum(0) / w.sum()
    var = (w[:, None] * d**2).sum(0) / w.sum() - c1**2
    assert g.gamma == pytest.approx(1 / np.prod(2 * np.sqrt(3 * var)), rel=1e-12)
    g = GaussianUniformMixture(rho=0.5, sigma=np.eye(2), gamma=1e-4, gamma_update="range")
    g.m_step(d, r)
    assert g.gamma == pytest.approx(1 / np.prod(d.max(0) - d.min(0)), rel=1e-12)
    g = GaussianUniformMixture(rho=0.5, sigma=np.eye(2), gamma=1e-4, gamma_update="fixed")
    g.m_step(d, r)
    assert g.gamma == 1e-4


def test_rho_sigma_update_maximises_expected_complete_loglik():
    """Perturbing the M-step's (rho, sigma) never increases Q: they are its maximisers."""
    d, _ = contaminated()
    g = GaussianUniformMixture(rho=0.5, sigma=1.0, gamma=1 / 16, gamma_update="fixed")
    r = g.e_step(d)

    def q_fn(rho, s2):
        ln = -0.5 * (np.log(2 * np.pi * s2) + d[:, 0] ** 2 / s2)
        return (r * (np.log(rho) + ln)).sum() + ((1 - r) * (np.log(1 - rho) + np.log(1 / 16))).sum()

    g.m_step(d, r)
    best = q_fn(g.rho, g.sigma[0, 0])
    for dr, ds in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01), (0.005, 0.005)]:
        assert q_fn(g.rho + dr, g.sigma[0, 0] + ds) < best


@pytest.mark.parametrize("mode", ["range", "fixed", "moments"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dim", [1, 2])
def test_em_never_lowers_the_likelihood_for_a_fixed_network(mode, seed, dim):
    d, inlier = contaminated(dim=dim, seed=seed)
    g = GaussianUniformMixture(rho=0.5, sigma=np.eye(dim) * 4.0, gamma=1 / 16**dim, gamma_update=mode)
    hist = g.fit(d, n_iter=60, tol=0)
    if mode != "moments":
        assert np.all(np.diff(hist) >= -1e-9 * abs(hist[0]))  # exact EM: monotone, every iteration
        assert hist[-1] > hist[0] + 10
    # the fit finds the contamination: rho near 150/200, and inliers get high responsibilities
    assert g.rho == pytest.approx(0.75, abs=0.08)
    r = g.e_step(d)
    assert r[inlier].mean() > 0.9 and r[~inlier].mean() < 0.3


def test_moment_gamma_em_keeps_the_rho_sigma_half_monotone():
    d, _ = contaminated(seed=4)
    g = GaussianUniformMixture(rho=0.5, sigma=4.0, gamma=1 / 16, gamma_update="moments")
    for _ in range(20):
        before = g.log_likelihood(d)
        gamma = g.gamma
        g.m_step(d, g.e_step(d))
        new_gamma = g.gamma
        g.gamma = gamma
        assert g.log_likelihood(d) >= before - 1e-9 * abs(before)
        g.gamma = new_gamma


def test_from_targets_and_repr():
    y = rng.uniform(0, 4, (30, 2))
    g = GaussianUniformMixture.from_targets(y, rho=0.8)
    span = y.max(0) - y.min(0)
    assert g.gamma == pytest.approx(1 / np.prod(span)) and g.rho == 0.8 and g.sigma.shape == (2, 2)
    assert "rho=0.8000" in repr(g)


def test_gum_errors():
    with pytest.raises(ValueError, match=r"rho \(the inlier prior\) must be in \(0, 1\), got 1.0"):
        GaussianUniformMixture(rho=1.0)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\), got 0.0"):
        GaussianUniformMixture(rho=0.0)
    g = GaussianUniformMixture()
    with pytest.raises(ValueError, match=r"must be in \(0, 1\), got -0.2"):
        g.rho = -0.2
    with pytest.raises(ValueError, match="gamma .* must be > 0"):
        GaussianUniformMixture(gamma=0)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        GaussianUniformMixture(sigma=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="gamma_update must be one of"):
        GaussianUniformMixture(gamma_update="ml")
    with pytest.raises(ValueError, match=r"residuals of dimension 2 but Sigma is \(1, 1\)"):
        g.e_step(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        g.log_likelihood([0.0, np.nan])
    with pytest.raises(ValueError, match=r"responsibilities must be \(3,\) values in \[0, 1\]"):
        g.m_step(np.zeros(3), [0.5, 1.5, 0.2])


def test_rho_stays_inside_the_open_interval():
    g = GaussianUniformMixture(rho=0.5, sigma=1.0, gamma=1e-3, gamma_update="fixed", rho_min=1e-3)
    g.m_step(np.zeros(10), np.ones(10))  # every sample an inlier: rho would be 1
    assert g.rho == pytest.approx(1 - 1e-3)


# -- the robust losses -----------------------------------------------------------------------------------------------
def t64(a, grad=True):
    return hg.tensor(a, dtype="float64", requires_grad=grad)


@pytest.mark.parametrize("shape", [(6,), (6, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gum_loss_matches_formula_and_torch(shape, reduction):
    phi_, y_, r_ = rng.standard_normal(shape), rng.standard_normal(shape), rng.random(shape[0])
    phi, y = t64(phi_), t64(y_)
    out = gum_loss(phi, y, r_, reduction)
    tp, ty = torch.tensor(phi_, requires_grad=True), torch.tensor(y_, requires_grad=True)
    sq = (ty - tp) ** 2
    per = torch.tensor(r_) * (sq if len(shape) == 1 else sq.sum(1))
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    w = rng.standard_normal(out.shape)
    (out * hg.tensor(w, dtype="float64")).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(phi.grad.numpy(), tp.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-10)


def fd_check(fn, x, rtol=1e-6):
    xt = t64(x)
    fn(xt).backward()
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += 1e-6
        lo[idx] -= 1e-6
        num[idx] = (fn(t64(hi, False)).item() - fn(t64(lo, False)).item()) / 2e-6
    np.testing.assert_allclose(xt.grad.numpy(), num, rtol=rtol, atol=1e-9)


def test_gum_loss_finite_differences():
    y, r = rng.standard_normal((5, 2)), rng.random(5)
    fd_check(lambda p: gum_loss(p, t64(y, False), r), rng.standard_normal((5, 2)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tukey_biweight_formula_torch_and_fd(reduction):
    y_ = rng.standard_normal(12) * 4
    phi_ = rng.standard_normal(12)
    c, s = 4.685, 0.8
    out = tukey_biweight_loss(t64(phi_, False), t64(y_, False), c, s, reduction).numpy()
    u = (y_ - phi_) / s
    per = np.where(np.abs(u) <= c, c**2 / 6 * (1 - (1 - (u / c) ** 2) ** 3), c**2 / 6)
    assert (np.abs(u) > c).any() and (np.abs(u) <= c).any()
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    # PyTorch has no Tukey loss: the same formula in torch ops, backward compared
    phi = t64(phi_)
    tp = torch.tensor(phi_, requires_grad=True)
    tu = (torch.tensor(y_) - tp) / s
    tper = torch.where(tu.abs() <= c, c**2 / 6 * (1 - (1 - (tu / c) ** 2) ** 3), torch.full_like(tu, c**2 / 6))
    tref = {"mean": tper.mean(), "sum": tper.sum(), "none": tper.sum()}[reduction]
    hout = tukey_biweight_loss(phi, t64(y_, False), c, s, reduction)
    (hout.sum() if reduction == "none" else hout).backward()
    tref.backward()
    np.testing.assert_allclose(phi.grad.numpy(), tp.grad.numpy(), rtol=1e-10, atol=1e-15)
    fd_check(lambda p: tukey_biweight_loss(p, t64(y_, False), c, s, "sum"), phi_)
    # residuals beyond c * scale give no gradient at all
    assert np.all(phi.grad.numpy()[np.abs(u) > c] == 0)


def test_mad_scale_and_loss_errors():
    d = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert mad_scale(d) == pytest.approx(1.4826 * 1.0)
    assert mad_scale(rng.standard_normal(20000)) == pytest.approx(1.0, abs=0.03)
    a, b = t64(np.zeros(4)), t64(np.zeros(3))
    with pytest.raises(ValueError, match=r"gum_loss: input \(4,\) and target \(3,\)"):
        gum_loss(a, b, np.ones(4))
    with pytest.raises(ValueError, match=r"r must be \(4,\)"):
        gum_loss(a, a, np.ones(3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        gum_loss(a, a, [0.5, 2.0, 0.1, 0.0])
    with pytest.raises(ValueError, match="scale must be > 0"):
        tukey_biweight_loss(a, a, scale=0)
    with pytest.raises(ValueError, match="c must be > 0"):
        tukey_biweight_loss(a, a, c=-1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        tukey_biweight_loss(a, a, reduction="avg")
    assert math.isfinite(tukey_biweight_loss(a, a).item())


def test_project_gradcheck_full_jacobian():
    r = np.random.default_rng(8)
    phi, y = t64(r.standard_normal((5, 2))), t64(r.standard_normal((5, 2)))
    w = r.random(5)
    assert hg.gradcheck(lambda p, t: gum_loss(p, t, w, "none"), (phi, y))
    u, v = t64(r.standard_normal(6) * 3), t64(r.standard_normal(6))
    assert hg.gradcheck(lambda p, t: tukey_biweight_loss(p, t, 4.685, 0.7, "none"), (u, v))
