"""Reductions (sum mean max min amax amin argmax argmin var std logsumexp prod) and softmax/log_softmax,
against finite differences and PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from test_ops_common import check_op, randn

import handgrad as hg
import handgrad.functional as F

DIMS = [None, 0, 1, -1, (0, 2), (2, 0, 1)]


def _tdim(d):
    return list(d) if isinstance(d, tuple) else d


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "var", "std", "logsumexp"])
def test_reductions_over_dims(name, dim, keepdim):
    x = randn(2, 3, 4, seed=5)
    if dim is None and name in ("amax", "amin"):
        hf, tf = (lambda t: getattr(t, name)(keepdim=keepdim)), (lambda t: getattr(t, name)(keepdim=keepdim))
    elif dim is None and name == "logsumexp":
        dim = (0, 1, 2)
    if dim is None and name not in ("amax", "amin"):
        if keepdim:
            hf = lambda t: getattr(t, name)(None, keepdim=True)  # noqa: E731
            tf = lambda t: getattr(t, name)(dim=None, keepdim=True)  # noqa: E731
        else:
            hf, tf = (lambda t: getattr(t, name)()), (lambda t: getattr(t, name)())
    elif dim is not None:
        hf = lambda t: getattr(t, name)(dim, keepdim=keepdim)  # noqa: E731
        tf = lambda t: getattr(t, name)(_tdim(dim), keepdim=keepdim)  # noqa: E731
    check_op(hf, tf, [x])


@pytest.mark.parametrize("name", ["sum", "mean", "var", "std", "amax", "logsumexp", "prod"])
def test_top_level_reductions(name):
    x = randn(3, 4, seed=1) + (2.0 if name == "prod" else 0.0)
    check_op(lambda t: getattr(hg, name)(t, 1), lambda t: getattr(torch, name)(t, 1), [x])


@pytest.mark.parametrize("kw", [{"unbiased": False}, {"correction": 0}, {"correction": 2}, {"unbiased": True}])
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_correction(name, kw):
    x = randn(4, 5, seed=2)
    check_op(lambda t: getattr(t, name)(1, **kw), lambda t: getattr(t, name)(1, **kw), [x])
    check_op(lambda t: getattr(hg, name)(t, **kw), lambda t: getattr(torch, name)(t, **kw), [x])


def test_var_legacy_positional_unbiased_and_std_of_constant():
    x = randn(6, seed=3)
    check_op(lambda t: t.var(False), lambda t: t.var(False), [x])
    # std of a constant slice: value 0, gradient 0 (torch's convention), not NaN
    c = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    check_op(lambda t: t.std(1), lambda t: t.std(1), [c], gradcheck=False)


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min(name, dim):
    x = randn(3, 4, 2, seed=4)
    if dim is None:
        check_op(lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), [x])
        return
    for keepdim in (False, True):
        check_op(lambda t, k=keepdim: tuple(getattr(t, name)(dim, keepdim=k)),
                 lambda t, k=keepdim: tuple(getattr(t, name)(dim, keepdim=k)), [x])
        check_op(lambda t, k=keepdim: getattr(hg, name)(t, dim, k).values,
                 lambda t, k=keepdim: getattr(torch, name)(t, dim, k).values, [x])


def test_max_min_ties():
    """Full reduction shares the gradient evenly over ties; amax too; max(dim) sends it to the first index."""
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    for name in ("max", "min", "amax", "amin"):
        check_op(lambda t, n=name: getattr(t, n)(), lambda t, n=name: getattr(t, n)(), [x], gradcheck=False)
        check_op(lambda t, n=name: getattr(t, n)(1), lambda t, n=name: getattr(t, n)(1), [x], gradcheck=False)
    h = hg.tensor(x, requires_grad=True)
    h.max().backward()
    np.testing.assert_allclose(h.grad.numpy(), [[0, 0.5, 0.5], [0, 0, 0]])
    v, i = hg.tensor(x).max(1)
    np.testing.assert_array_equal(i.numpy(), [1, 0])


def test_max_result_is_namedtuple():
    r = hg.tensor([[1.0, 5.0], [7.0, 2.0]]).max(dim=1)
    np.testing.assert_array_equal(r.values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(r.indices.numpy(), [1, 0])
    assert r.indices.dtype == np.int64 and not r.indices.requires_grad
    values, indices = r
    assert values is r.values


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, dim, keepdim):
    x = randn(3, 4, 5, seed=8)
    h = getattr(hg.tensor(x), name)(dim, keepdim)
    t = getattr(torch.tensor(x), name)(dim, keepdim)
    assert h.shape == tuple(t.shape) and h.dtype == np.int64
    np.testing.assert_array_equal(h.numpy(), t.numpy())
    np.testing.assert_array_equal(
        getattr(hg, name)(hg.tensor(x), dim).numpy(), getattr(torch, name)(torch.tensor(x), dim).numpy()
    )


def test_argmax_ties_take_first_like_torch():
    x = np.array([[1.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(hg.tensor(x).argmax(1).numpy(), torch.tensor(x).argmax(1).numpy())


def test_logsumexp_is_stable():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf], [-1000.0, -1001.0, -np.inf]])
    check_op(lambda t: t.logsumexp(1), lambda t: t.logsumexp(1), [x[[0, 2]]], gradcheck=False)
    h = hg.tensor(x).logsumexp(1).numpy()
    np.testing.assert_allclose(h, torch.tensor(x).logsumexp(1).numpy())
    assert h[1] == -np.inf


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_prod(dim):
    x = randn(3, 4, seed=9) + 0.5
    if dim is None:
        check_op(lambda t: t.prod(), lambda t: t.prod(), [x])
    else:
        for keepdim in (False, True):
            check_op(lambda t, k=keepdim: t.prod(dim, k), lambda t, k=keepdim: t.prod(dim, k), [x])


def test_prod_with_zeros_has_exact_gradient():
    x = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 5.0]])
    check_op(lambda t: t.prod(1), lambda t: t.prod(1), [x], gradcheck=True)
    check_op(lambda t: t.prod(), lambda t: t.prod(), [x[0]], gradcheck=True)


@pytest.mark.parametrize("dim", [0, 1, -1, 2])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_log_softmax(log, dim):
    x = randn(2, 3, 4, seed=11, scale=3.0)
    hf, tf = (F.log_softmax, tF.log_softmax) if log else (F.softmax, tF.softmax)
    check_op(lambda t: hf(t, dim), lambda t: tf(t, dim), [x])
    name = "log_softmax" if log else "softmax"
    check_op(lambda t: getattr(t, name)(dim), lambda t: getattr(t, name)(dim), [x])
    check_op(lambda t: getattr(hg, name)(t, dim), lambda t: getattr(torch, name)(t, dim), [x])


def test_softmax_stable_and_dtype_arg():
    x = np.array([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0]])
    check_op(lambda t: F.softmax(t, 1), lambda t: tF.softmax(t, 1), [x], gradcheck=False)
    check_op(lambda t: F.log_softmax(t, 1), lambda t: tF.log_softmax(t, 1), [x], gradcheck=False)
    h = F.softmax(hg.tensor(x, dtype="float32"), dim=1, dtype="float64")
    assert h.dtype == np.float64


def test_softmax_implicit_dim_warns_and_matches_torch():
    x = randn(2, 3, seed=1)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        h = F.softmax(hg.tensor(x))
    with pytest.warns(UserWarning):
        t = tF.softmax(torch.tensor(x))
    np.testing.assert_allclose(h.numpy(), t.numpy(), rtol=1e-12)


def test_reduction_errors():
    x = hg.randn(2, 3)
    with pytest.raises(IndexError, match=r"sum: dim 2 is out of range for a tensor with 2 dimensions"):
        x.sum(2)
    with pytest.raises(IndexError, match="max: dim -3"):
        x.max(-3)
    with pytest.raises(ValueError, match="var: dim .* same dimension more than once"):
        x.var((0, -2))
    with pytest.raises(ValueError, match="std: give either unbiased or correction"):
        x.std(0, unbiased=True, correction=1)
    with pytest.raises(RuntimeError, match=r"max: cannot reduce an empty tensor of shape \(0, 3\)"):
        hg.zeros(0, 3).max()
    with pytest.raises(IndexError, match="argmax: dim 5"):
        x.argmax(5)
    with pytest.raises(TypeError, match="prod: dim must be an int"):
        x.prod((0, 1))
    with pytest.raises(TypeError, match="mean: expected a floating tensor"):
        hg.tensor([1, 2]).mean()
    with pytest.raises(IndexError, match="softmax: dim 3"):
        F.softmax(x, 3)
    with pytest.raises(IndexError, match="logsumexp: dim 4"):
        x.logsumexp(4)
    with pytest.raises(TypeError, match="max: dim must be an int"):
        x.max((0, 1))
