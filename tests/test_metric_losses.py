"""Distances, contrastive and triplet losses: direct formulas, finite differences and PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import handgrad as hg
import handgrad.functional.metric_losses as M
from handgrad.metric import ContrastiveLoss, TripletMarginLoss, batch_contrastive_loss, batch_triplet_loss


def numgrad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) w.r.t. every array (float64)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            fp = f(*arrays)
            a[idx] = old - eps
            fm = f(*arrays)
            a[idx] = old
            g[idx] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def check_grad(fn, arrays, rtol=1e-6, atol=1e-8):
    """fn maps tensors to a scalar tensor; compare its backward with central differences."""
    ts = [hg.tensor(a.copy(), dtype="float64", requires_grad=True) for a in arrays]
    fn(*ts).backward()
    num = numgrad(
        lambda *xs: float(fn(*[hg.tensor(x, dtype="float64") for x in xs]).item()), [a.copy() for a in arrays]
    )
    for t, g in zip(ts, num):
        np.testing.assert_allclose(t.grad.numpy(), g, rtol=rtol, atol=atol)


rng = np.random.default_rng(0)


def t64(a, grad=True):
    return hg.tensor(a, dtype="float64", requires_grad=grad)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_pairwise_distance_matches_torch(p):
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    a, b = t64(x1), t64(x2)
    d = M.pairwise_distance(a, b, p=p)
    ta, tb = torch.tensor(x1, requires_grad=True), torch.tensor(x2, requires_grad=True)
    td = TF.pairwise_distance(ta, tb, p=p)
    np.testing.assert_allclose(d.numpy(), td.detach().numpy(), rtol=1e-10)
    w = rng.standard_normal(5)
    (d * hg.tensor(w, dtype="float64")).sum().backward()
    (td * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-8)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-8)
    check_grad(lambda u, v: (M.pairwise_distance(u, v, p=p) * hg.tensor(w, dtype="float64")).sum(), [x1, x2])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_row_distances_direct_formula_and_gradcheck(metric):
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    d = M.distance(t64(x1), t64(x2), metric).numpy()
    if metric == "cosine":
        ref = 1 - (x1 * x2).sum(1) / (np.linalg.norm(x1, axis=1) * np.linalg.norm(x2, axis=1))
        tref = 1 - TF.cosine_similarity(torch.tensor(x1), torch.tensor(x2)).numpy()
        np.testing.assert_allclose(d, tref, rtol=1e-10)
    else:
        ref = ((x1 - x2) ** 2).sum(1)
        ref = ref if metric == "sqeuclidean" else np.sqrt(ref)
    np.testing.assert_allclose(d, ref, rtol=1e-12)
    w = rng.standard_normal(6)
    check_grad(lambda u, v: (M.distance(u, v, metric) * hg.tensor(w, dtype="float64")).sum(), [x1, x2])


def test_cosine_similarity_matches_torch_forward_backward():
    x1, x2 = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    a, b = t64(x1), t64(x2)
    M.cosine_similarity(a, b).sum().backward()
    ta, tb = torch.tensor(x1, requires_grad=True), torch.tensor(x2, requires_grad=True)
    TF.cosine_similarity(ta, tb).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-8)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-8)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_distance_matrix_formula_gradcheck_and_torch_cdist(metric):
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    D = M.distance_matrix(t64(x), t64(y), metric).numpy()
    for i in range(5):
        for j in range(4):
            u, v = x[i], y[j]
            ref = {"euclidean": np.linalg.norm(u - v), "sqeuclidean": ((u - v) ** 2).sum(),
                   "cosine": 1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v)}[metric]
            assert D[i, j] == pytest.approx(ref, rel=1e-12, abs=1e-14)
    W = rng.standard_normal((5, 4))
    check_grad(lambda u, v: (M.distance_matrix(u, v, metric) * hg.tensor(W, dtype="float64")).sum(), [x, y])
    # self-distances: the diagonal is exactly 0, and x enters twice (gradients add)
    Ws = rng.standard_normal((5, 5))
    Ws[np.diag_indices(5)] = 0  # euclidean is not differentiable at 0
    check_grad(lambda u: (M.distance_matrix(u, metric=metric) * hg.tensor(Ws, dtype="float64")).sum(), [x])
    if metric == "euclidean":
        a, b = t64(x), t64(y)
        (M.cdist(a, b) * hg.tensor(W, dtype="float64")).sum().backward()
        ta, tb = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
        (torch.cdist(ta, tb) * torch.tensor(W)).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-8)
        np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-8)


def test_self_distance_diagonal_zero_and_finite_gradient():
    x = t64(rng.standard_normal((4, 3)))
    D = M.distance_matrix(x)
    assert np.all(np.diag(D.numpy()) == 0)
    D.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p", [2, 1])
def test_triplet_margin_loss_matches_torch(swap, reduction, p):
    a_, p_, n_ = (rng.standard_normal((7, 4)) for _ in range(3))
    n_[:3] += 4.0  # these negatives are far: their triplets are inactive
    a, pp, n = t64(a_), t64(p_), t64(n_)
    out = M.triplet_margin_loss(a, pp, n, margin=1.5, p=p, swap=swap, reduction=reduction)
    ta, tp, tn = (torch.tensor(v, requires_grad=True) for v in (a_, p_, n_))
    tout = TF.triplet_margin_loss(ta, tp, tn, margin=1.5, p=p, swap=swap, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10)
    w = rng.standard_normal(out.shape)
    (out * hg.tensor(w, dtype="float64")).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    for h, t in ((a, ta), (pp, tp), (n, tn)):
        np.testing.assert_allclose(h.grad.numpy(), t.grad.numpy(), rtol=1e-8, atol=1e-14)
    # some triplets active and some not, so the test covers both branches of the hinge
    per = TF.triplet_margin_loss(ta, tp, tn, margin=1.5, p=p, swap=swap, reduction="none").detach().numpy()
    assert (per > 0).any() and (per == 0).any()


def test_triplet_margin_loss_direct_formula_gradcheck_and_module():
    a_, p_, n_ = (rng.standard_normal((6, 3)) for _ in range(3))
    out = M.triplet_margin_loss(t64(a_), t64(p_), t64(n_), margin=1.0).item()
    d = lambda u, v: np.linalg.norm(u - v + 1e-6, axis=1)  # noqa: E731
    assert out == pytest.approx(np.maximum(d(a_, p_) - d(a_, n_) + 1.0, 0).mean(), rel=1e-12)
    check_grad(lambda u, v, w: M.triplet_margin_loss(u, v, w, margin=1.0, swap=True), [a_, p_, n_])
    mod = TripletMarginLoss(margin=1.0)
    assert mod(t64(a_), t64(p_), t64(n_)).item() == pytest.approx(out, rel=1e-14)
    # unbatched (D,) input, as PyTorch allows
    u = M.triplet_margin_loss(t64(a_[0]), t64(p_[0]), t64(n_[0]), reduction="none").item()
    tu = TF.triplet_margin_loss(*(torch.tensor(v[0]) for v in (a_, p_, n_)), reduction="none").item()
    assert u == pytest.approx(tu, rel=1e-12)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_contrastive_loss_direct_formula_and_gradcheck(squared, metric):
    x1, x2 = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    s = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    m = 2.0 if metric == "euclidean" else 0.9
    out = M.contrastive_loss(t64(x1), t64(x2), s, margin=m, squared=squared, metric=metric, reduction="none").numpy()
    if metric == "euclidean":
        d = np.linalg.norm(x1 - x2, axis=1)
    else:
        d = 1 - (x1 * x2).sum(1) / np.linalg.norm(x1, axis=1) / np.linalg.norm(x2, axis=1)
    h = np.maximum(m - d, 0)
    ref = s * d**2 + (1 - s) * h**2 if squared else s * d + (1 - s) * h
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert (h[s == 0] > 0).any() and (h[s == 0] == 0).any()  # both branches of the hinge are exercised
    check_grad(lambda u, v: M.contrastive_loss(u, v, s, m, squared, metric), [x1, x2])
    total = ContrastiveLoss(m, squared, metric, "sum")(t64(x1), t64(x2), s).item()
    assert total == pytest.approx(ref.sum(), rel=1e-12)


def test_contrastive_loss_matches_torch_composition():
    """PyTorch has no contrastive loss: compare with the same formula written in torch ops (forward + grad)."""
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    s = np.array([1, 1, 0, 0, 0, 1])
    a, b = t64(x1), t64(x2)
    M.contrastive_loss(a, b, s, margin=3.0, squared=True).backward()
    ta, tb = torch.tensor(x1, requires_grad=True), torch.tensor(x2, requires_grad=True)
    d = (ta - tb).pow(2).sum(1).sqrt()
    ts = torch.tensor(s, dtype=torch.float64)
    (ts * d**2 + (1 - ts) * torch.clamp(3.0 - d, min=0) ** 2).mean().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-8)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-8)


@pytest.mark.parametrize("strategy", ["all", "hard", "semihard"])
def test_batch_triplet_loss_value_and_gradcheck(strategy):
    x = rng.standard_normal((8, 3))
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    from handgrad.metric import mine_triplets

    D = np.linalg.norm(x[:, None] - x[None], axis=2)
    a, p, n = mine_triplets(y, D, strategy, 1.0)
    losses = np.maximum(D[a, p] - D[a, n] + 1.0, 0)
    ref = losses.sum() / max((losses > 0).sum(), 1) if strategy == "all" else losses.mean()
    assert batch_triplet_loss(t64(x), y, 1.0, strategy).item() == pytest.approx(ref, rel=1e-12)
    check_grad(lambda u: batch_triplet_loss(u, y, 1.0, strategy), [x], rtol=1e-5)


def test_batch_contrastive_loss_value_and_gradcheck():
    x = rng.standard_normal((6, 2))
    y = np.array([0, 0, 1, 1, 2, 2])
    i, j = np.triu_indices(6, 1)
    d = np.linalg.norm(x[i] - x[j], axis=1)
    s = (y[i] == y[j]).astype(float)
    ref = (s * d + (1 - s) * np.maximum(1.5 - d, 0)).mean()
    assert batch_contrastive_loss(t64(x), y, 1.5).item() == pytest.approx(ref, rel=1e-12)
    check_grad(lambda u: batch_contrastive_loss(u, y, 1.5, "hard"), [x], rtol=1e-5)


def test_errors_name_op_and_shapes():
    a, b = t64(rng.standard_normal((4, 3))), t64(rng.standard_normal((3, 3)))
    with pytest.raises(ValueError, match=r"triplet_margin_loss: anchor \(4, 3\) and negative \(3, 3\)"):
        M.triplet_margin_loss(a, a, b)
    with pytest.raises(ValueError, match="reduction must be one of"):
        M.triplet_margin_loss(a, a, a, reduction="avg")
    with pytest.raises(ValueError, match="p must be positive"):
        M.triplet_margin_loss(a, a, a, p=0)
    with pytest.raises(ValueError, match="deprecated"):
        M.triplet_margin_loss(a, a, a, size_average=True)
    with pytest.raises(ValueError, match=r"contrastive_loss: x1 \(4, 3\) and x2 \(3, 3\)"):
        M.contrastive_loss(a, b, [1, 0, 1])
    with pytest.raises(ValueError, match=r"similar must have shape \(4,\)"):
        M.contrastive_loss(a, a, [1, 0, 1])
    with pytest.raises(ValueError, match="only 0/1"):
        M.contrastive_loss(a, a, [1, 0, 2, 1])
    with pytest.raises(ValueError, match="margin must be >= 0"):
        M.contrastive_loss(a, a, [1, 0, 1, 1], margin=-1)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        M.distance(a, a, "manhattan")
    with pytest.raises(ValueError, match=r"distance_matrix: expected x \(N, K\).*got x \(4, 3\) and y \(2, 2\)"):
        M.distance_matrix(a, t64(np.zeros((2, 2))))
    with pytest.raises(TypeError, match="must be floating"):
        M.pairwise_distance(hg.tensor([[1, 2]]), hg.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"expected \(D,\) or \(N, D\)"):
        M.pairwise_distance(t64(np.zeros((2, 2, 2))), t64(np.zeros((2, 2, 2))))
    with pytest.raises(ValueError, match="only p=2"):
        M.cdist(a, a, p=1)
    with pytest.raises(ValueError, match="only the last dimension"):
        M.cosine_similarity(a, a, dim=0)
    with pytest.raises(ValueError, match="no valid triplet"):
        batch_triplet_loss(a, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels \(3,\) do not match embeddings \(4, 3\)"):
        batch_triplet_loss(a, np.array([0, 1, 2]))


@pytest.mark.parametrize("case", ["pairwise_p2", "pairwise_p3", "row_cosine", "matrix_euclid", "matrix_cosine",
                                  "contrastive_sq", "triplet_swap"])
def test_project_gradcheck_full_jacobian(case):
    """The same proofs through the project's ``handgrad.gradcheck`` (entry-by-entry Jacobians, float64)."""
    r = np.random.default_rng(5)
    a, b, c = (t64(r.standard_normal((4, 3))) for _ in range(3))
    s = np.array([1, 0, 0, 1])
    fns = {
        "pairwise_p2": (lambda u, v: M.pairwise_distance(u, v), (a, b)),
        "pairwise_p3": (lambda u, v: M.pairwise_distance(u, v, p=3), (a, b)),
        "row_cosine": (lambda u, v: M.cosine_distance(u, v), (a, b)),
        "matrix_euclid": (lambda u, v: M.distance_matrix(u, v), (a, b)),
        "matrix_cosine": (lambda u, v: M.distance_matrix(u, v, metric="cosine"), (a, b)),
        "contrastive_sq": (lambda u, v: M.contrastive_loss(u, v, s, 2.0, True, reduction="none"), (a, b)),
        "triplet_swap": (lambda u, v, w: M.triplet_margin_loss(u, v, w, 2.0, swap=True, reduction="none"), (a, b, c)),
    }
    fn, inputs = fns[case]
    assert hg.gradcheck(fn, inputs)
