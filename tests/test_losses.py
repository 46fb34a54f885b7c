"""Losses (handgrad.functional.losses) vs PyTorch for every option, plus finite-difference gradient checks."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import handgrad as hg
import handgrad.functional as F

RTOL, ATOL = 1e-8, 1e-10


def _fd_check(fn, arrays, which=None, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """Central differences of sum(fn(*tensors) * R) against the analytic gradients of each float array."""
    rng = np.random.default_rng(seed)
    which = range(len(arrays)) if which is None else which
    ts = [hg.tensor(a, requires_grad=(i in which)) for i, a in enumerate(arrays)]
    out = fn(*ts)
    r = rng.standard_normal(out.shape)
    (out * hg.tensor(r)).sum().backward()
    for i in which:
        a = arrays[i]
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            fp = float((fn(*[hg.tensor(b) for b in arrays]).numpy() * r).sum())
            a[idx] = old - eps
            fm = float((fn(*[hg.tensor(b) for b in arrays]).numpy() * r).sum())
            a[idx] = old
            num[idx] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(ts[i].grad.numpy(), num, rtol=rtol, atol=atol, err_msg=f"input {i}")


def _compare(hg_fn, torch_fn, arrays, grad_of, seed=1):
    """Forward and backward (random upstream gradient) of handgrad vs torch, float64."""
    hts = [hg.tensor(a, requires_grad=(i in grad_of)) for i, a in enumerate(arrays)]
    tts = [torch.tensor(a, requires_grad=(i in grad_of)) for i, a in enumerate(arrays)]
    out, ref = hg_fn(*hts), torch_fn(*tts)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    r = np.random.default_rng(seed).standard_normal(ref.shape)
    (out * hg.tensor(r)).sum().backward()
    (ref * torch.tensor(r)).sum().backward()
    for i in grad_of:
        np.testing.assert_allclose(hts[i].grad.numpy(), tts[i].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{i}")
    return out


rng = np.random.default_rng(0)
SHAPES = {"2d": (6, 5), "4d": (3, 4, 2, 3), "1d": (5,)}


def _index_target(shape, ignore_index, ignored):
    c = shape[0] if len(shape) == 1 else shape[1]
    tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    t = rng.integers(0, c, size=tshape)
    if ignored and t.ndim:
        t.flat[::3] = ignore_index
    return t


# -- cross_entropy -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,weighted,ignore,smooth,reduction",
    list(itertools.product(SHAPES, [False, True], [None, -100, 2], [0.0, 0.3], ["mean", "sum", "none"])),
)
def test_cross_entropy_class_indices_vs_torch(shape, weighted, ignore, smooth, reduction):
    shape = SHAPES[shape]
    c = shape[0] if len(shape) == 1 else shape[1]
    ii = -100 if ignore is None else ignore
    x = rng.standard_normal(shape) * 2
    t = _index_target(shape, ii, ignore is not None)
    w = rng.uniform(0.2, 2.0, c) if weighted else None
    kw = dict(ignore_index=ii, reduction=reduction, label_smoothing=smooth)
    _compare(
        lambda a: F.cross_entropy(a, hg.tensor(t), weight=None if w is None else hg.tensor(w), **kw),
        lambda a: TF.cross_entropy(a, torch.tensor(t), weight=None if w is None else torch.tensor(w), **kw),
        [x], [0],
    )


@pytest.mark.parametrize(
    "shape,weighted,smooth,reduction",
    list(itertools.product(SHAPES, [False, True], [0.0, 0.25], ["mean", "sum", "none"])),
)
def test_cross_entropy_probabilities_vs_torch(shape, weighted, smooth, reduction):
    shape = SHAPES[shape]
    c = shape[0] if len(shape) == 1 else shape[1]
    x = rng.standard_normal(shape)
    p = rng.uniform(0.0, 1.0, shape)
    p /= p.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    w = rng.uniform(0.2, 2.0, c) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smooth)
    _compare(
        lambda a, b: F.cross_entropy(a, b, weight=None if w is None else hg.tensor(w), **kw),
        lambda a, b: TF.cross_entropy(a, b, weight=None if w is None else torch.tensor(w), **kw),
        [x, p], [0, 1],
    )


def test_cross_entropy_gradcheck_all_options():
    x = rng.standard_normal((4, 3, 2))
    t = np.array([[0, 2], [1, -100], [2, 2], [0, 1]])
    w = np.array([0.5, 1.5, 2.0])
    _fd_check(lambda a: F.cross_entropy(a, hg.tensor(t), hg.tensor(w), label_smoothing=0.1), [x])
    _fd_check(lambda a: F.cross_entropy(a, hg.tensor(t), reduction="none"), [x])
    p = rng.uniform(0.1, 1, (4, 3, 2))
    _fd_check(lambda a, b: F.cross_entropy(a, b, hg.tensor(w), label_smoothing=0.2), [x, p])


def test_cross_entropy_known_value_and_softmax_minus_onehot():
    # two equal logits: loss ln 2, gradient (softmax - onehot) / N
    x = hg.tensor(np.zeros((1, 2)), requires_grad=True)
    loss = F.cross_entropy(x, hg.tensor([1]))
    assert abs(loss.item() - np.log(2)) < 1e-15
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.5, -0.5]], rtol=1e-15)


def test_cross_entropy_stable_for_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [0.0, 1e4, 0.0]])
    out = F.cross_entropy(hg.tensor(x), hg.tensor([2, 1]), reduction="none").numpy()
    np.testing.assert_allclose(out, [2000.0, 0.0])


def test_cross_entropy_all_ignored_is_nan_like_torch():
    x = rng.standard_normal((3, 4))
    t = np.full(3, -100)
    out = F.cross_entropy(hg.tensor(x), hg.tensor(t)).item()
    ref = TF.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    assert np.isnan(out) and np.isnan(ref)


def test_cross_entropy_float32_stays_float32():
    x = hg.randn(4, 3, requires_grad=True)
    loss = F.cross_entropy(x, hg.tensor([0, 1, 2, 0]))
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32


def test_cross_entropy_legacy_flags():
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    for sa, rd in [(None, False), (False, None), (True, True)]:
        out = F.cross_entropy(hg.tensor(x), hg.tensor(t), size_average=sa, reduce=rd)
        ref = TF.cross_entropy(torch.tensor(x), torch.tensor(t), size_average=sa, reduce=rd)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=RTOL)


def test_cross_entropy_errors():
    x = hg.randn(4, 5)
    with pytest.raises(IndexError, match=r"cross_entropy: target \(4,\) holds class 5.*\(4, 5\) with 5 classes"):
        F.cross_entropy(x, hg.tensor([0, 1, 5, 2]))
    with pytest.raises(IndexError, match="cross_entropy.*class -1"):
        F.cross_entropy(x, hg.tensor([0, -1, 1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: input \(4, 5\) expects a target of shape \(4,\)"):
        F.cross_entropy(x, hg.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="cross_entropy: class-index target must be an integer"):
        F.cross_entropy(x, hg.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: weight must be a 1-d tensor.*\(5\).*\(3,\)"):
        F.cross_entropy(x, hg.tensor([0, 1, 2, 3]), weight=hg.ones(3))
    with pytest.raises(ValueError, match="cross_entropy: reduction must be one of"):
        F.cross_entropy(x, hg.tensor([0, 1, 2, 3]), reduction="avg")
    with pytest.raises(ValueError, match="cross_entropy: label_smoothing must be in"):
        F.cross_entropy(x, hg.tensor([0, 1, 2, 3]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="cross_entropy: input must be a floating"):
        F.cross_entropy(hg.tensor([[1, 2]]), hg.tensor([0]))
    with pytest.raises(ValueError, match="cross_entropy: input must have a class dimension"):
        F.cross_entropy(hg.tensor(1.0), hg.tensor(0))


# -- nll_loss ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,weighted,ignore,reduction",
    list(itertools.product(SHAPES, [False, True], [None, 1], ["mean", "sum", "none"])),
)
def test_nll_loss_vs_torch(shape, weighted, ignore, reduction):
    shape = SHAPES[shape]
    c = shape[0] if len(shape) == 1 else shape[1]
    ii = -100 if ignore is None else ignore
    x = rng.standard_normal(shape)
    t = _index_target(shape, ii, ignore is not None)
    w = rng.uniform(0.2, 2.0, c) if weighted else None
    kw = dict(ignore_index=ii, reduction=reduction)
    _compare(
        lambda a: F.nll_loss(a, hg.tensor(t), None if w is None else hg.tensor(w), **kw),
        lambda a: TF.nll_loss(a, torch.tensor(t), None if w is None else torch.tensor(w), **kw),
        [x], [0],
    )


def test_nll_loss_gradcheck_and_errors():
    x = rng.standard_normal((5, 3))
    t = np.array([0, 2, -100, 1, 1])
    _fd_check(lambda a: F.nll_loss(a, hg.tensor(t), hg.tensor([1.0, 2.0, 0.5])), [x])
    with pytest.raises(IndexError, match=r"nll_loss: target \(5,\) holds class 3"):
        F.nll_loss(hg.tensor(x), hg.tensor([0, 1, 3, 0, 0]))
    with pytest.raises(ValueError, match="nll_loss: reduction"):
        F.nll_loss(hg.tensor(x), hg.tensor(t), reduction="batchmean")


# -- element-wise losses -----------------------------------------------------------------------------------
POINTWISE = {
    "mse": (F.mse_loss, TF.mse_loss, {}),
    "l1": (F.l1_loss, TF.l1_loss, {}),
    "smooth_l1": (F.smooth_l1_loss, TF.smooth_l1_loss, {"beta": 0.7}),
    "smooth_l1_beta0": (F.smooth_l1_loss, TF.smooth_l1_loss, {"beta": 0.0}),
    "huber": (F.huber_loss, TF.huber_loss, {"delta": 0.6}),
}


@pytest.mark.parametrize("name,reduction", list(itertools.product(POINTWISE, ["mean", "sum", "none"])))
def test_pointwise_losses_vs_torch(name, reduction):
    f, tf, kw = POINTWISE[name]
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _compare(lambda a, b: f(a, b, reduction=reduction, **kw), lambda a, b: tf(a, b, reduction=reduction, **kw),
             [x, t], [0, 1])
    _fd_check(lambda a, b: f(a, b, reduction=reduction, **kw), [x, t])


@pytest.mark.parametrize("name,reduction", list(itertools.product(["mse", "l1", "huber"], ["mean", "sum", "none"])))
def test_weighted_pointwise_losses_vs_torch(name, reduction):
    # weighted mse/l1 'mean' divide by sum(w), huber by the element count: both as PyTorch
    f, tf, kw = POINTWISE[name]
    x, t, w = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.uniform(0.1, 2, (4, 3))
    _compare(lambda a, b: f(a, b, reduction=reduction, weight=hg.tensor(w), **kw),
             lambda a, b: tf(a, b, reduction=reduction, weight=torch.tensor(w), **kw), [x, t], [0, 1])


def test_pointwise_broadcast_target_vs_torch():
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((3,))
    with pytest.warns(UserWarning):  # torch warns about the size mismatch; handgrad broadcasts silently
        _compare(lambda a, b: F.mse_loss(a, b), lambda a, b: TF.mse_loss(a, b), [x, t], [0, 1])


def test_smooth_l1_and_huber_values_by_hand():
    x, t = hg.tensor([0.0, 0.5, 3.0]), hg.tensor([0.0, 0.0, 0.0])
    np.testing.assert_allclose(F.smooth_l1_loss(x, t, reduction="none").numpy(), [0.0, 0.125, 2.5])
    np.testing.assert_allclose(F.huber_loss(x, t, reduction="none", delta=2.0).numpy(), [0.0, 0.125, 4.0])


def test_pointwise_errors():
    with pytest.raises(ValueError, match=r"mse_loss: input \(4, 3\) and target \(2,\) cannot be broadcast"):
        F.mse_loss(hg.randn(4, 3), hg.randn(2))
    with pytest.raises(ValueError, match=r"l1_loss: weight \(3,\) must have the same size as input \(4, 3\)"):
        F.l1_loss(hg.randn(4, 3), hg.randn(4, 3), weight=hg.ones(3))
    with pytest.raises(ValueError, match="huber_loss: delta must be positive"):
        F.huber_loss(hg.randn(2), hg.randn(2), delta=0.0)
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be non-negative"):
        F.smooth_l1_loss(hg.randn(2), hg.randn(2), beta=-1.0)
    with pytest.raises(ValueError, match="mse_loss: reduction must be one of"):
        F.mse_loss(hg.randn(2), hg.randn(2), reduction="batchmean")
    with pytest.raises(TypeError, match="mse_loss: input dtype float64 and target dtype float32 differ"):
        F.mse_loss(hg.randn(2, dtype="float64"), hg.randn(2))
    with pytest.raises(TypeError, match="mse_loss: input must be a Tensor"):
        F.mse_loss(np.zeros(2), hg.randn(2))


# -- binary cross-entropy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("weight,reduction", list(itertools.product([None, "full", "row"], ["mean", "sum", "none"])))
def test_binary_cross_entropy_vs_torch(weight, reduction):
    x, t = rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0, 1, (4, 3))
    w = {None: None, "full": rng.uniform(0.1, 2, (4, 3)), "row": rng.uniform(0.1, 2, (3,))}[weight]
    _compare(lambda a, b: F.binary_cross_entropy(a, b, None if w is None else hg.tensor(w), reduction=reduction),
             lambda a, b: TF.binary_cross_entropy(a, b, None if w is None else torch.tensor(w), reduction=reduction),
             [x, t], [0, 1])
    _fd_check(lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction), [x, t])


def test_binary_cross_entropy_clamps_logs_like_torch():
    x, t = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])
    out = F.binary_cross_entropy(hg.tensor(x), hg.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(out, [100.0, 100.0, np.log(2)])
    with pytest.raises(ValueError, match=r"binary_cross_entropy: input \(2,\) must hold probabilities"):
        F.binary_cross_entropy(hg.tensor([0.5, 1.5]), hg.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: target \(3,\) must have the same shape as input"):
        F.binary_cross_entropy(hg.tensor([0.5, 0.5]), hg.tensor([1.0, 0.0, 1.0]))


@pytest.mark.parametrize(
    "weighted,pos_weight,reduction", list(itertools.product([False, True], [False, True], ["mean", "sum", "none"]))
)
def test_bce_with_logits_vs_torch(weighted, pos_weight, reduction):
    x, t = rng.standard_normal((5, 3)) * 3, rng.uniform(0, 1, (5, 3))
    w = rng.uniform(0.1, 2, (5, 3)) if weighted else None
    pw = rng.uniform(0.5, 3, (3,)) if pos_weight else None

    def ours(a, b):
        return F.binary_cross_entropy_with_logits(a, b, None if w is None else hg.tensor(w), reduction=reduction,
                                                  pos_weight=None if pw is None else hg.tensor(pw))

    def ref(a, b):
        return TF.binary_cross_entropy_with_logits(
            a, b, None if w is None else torch.tensor(w), reduction=reduction,
            pos_weight=None if pw is None else torch.tensor(pw))

    _compare(ours, ref, [x, t], [0, 1])
    _fd_check(ours, [x, t])


def test_bce_with_logits_is_stable_at_huge_logits():
    x = hg.tensor([1000.0, -1000.0, 1000.0, -1000.0], requires_grad=True)
    t = hg.tensor([1.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
    loss.backward()
    assert loss.item() == 2000.0
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 1.0, -1.0])
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: pos_weight \(2,\) cannot be broadcast"):
        F.binary_cross_entropy_with_logits(hg.randn(4, 3), hg.rand(4, 3), pos_weight=hg.ones(2))


# -- KL divergence -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reduction,log_target", list(itertools.product(["mean", "sum", "none", "batchmean"], [False, True]))
)
def test_kl_div_vs_torch(reduction, log_target):
    x = np.log(rng.dirichlet(np.ones(4), size=3))
    p = rng.dirichlet(np.ones(4), size=3)
    t = np.log(p) if log_target else p
    _compare(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
             lambda a, b: TF.kl_div(a, b, reduction=reduction, log_target=log_target), [x, t], [0, 1])
    _fd_check(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target), [x, t])


def test_kl_div_zero_target_contributes_zero_and_batchmean_is_kl():
    p, q = np.array([[0.0, 0.5, 0.5]]), np.array([[0.2, 0.4, 0.4]])
    out = F.kl_div(hg.tensor(np.log(q)), hg.tensor(p), reduction="batchmean").item()
    assert abs(out - np.log(0.5 / 0.4)) < 1e-15
    with pytest.raises(ValueError, match="kl_div: reduction must be one of"):
        F.kl_div(hg.tensor(np.log(q)), hg.tensor(p), reduction="avg")
