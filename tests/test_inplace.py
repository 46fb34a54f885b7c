"""In-place ops as PyTorch has them (issue 10): values, gradients through the graph rewrite, the version
counter error when a saved tensor was overwritten, the leaf rule, ``+=``, and ``view`` vs ``reshape``.
Every case runs the same program on handgrad and PyTorch and compares."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

X = np.array([[0.5, -1.5, 2.0], [3.0, -0.25, 1.0]])
Y = np.array([[1.0, 2.0, -1.0], [0.5, 0.5, 4.0]])


def _both(fn) -> None:
    """Run ``fn(lib, x, y)`` (x, y leaves requiring grad) with each library; compare values and gradients."""
    res = []
    for lib in (hg, torch):
        x = lib.tensor(X, requires_grad=True)
        y = lib.tensor(Y, requires_grad=True)
        out = fn(lib, x, y)
        (out * lib.tensor(np.arange(out.numel(), dtype=np.float64).reshape(tuple(out.shape)))).sum().backward()
        g = [np.zeros(X.shape) if t.grad is None else np.array(t.grad.numpy()) for t in (x, y)]
        res.append((np.array(out.detach().numpy()), *g))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# -- values and gradients through the graph -----------------------------------------------------------------
CASES = {
    "add_": lambda L, x, y: (x * 1).add_(y),
    "add_alpha": lambda L, x, y: (x * 1).add_(y, alpha=-2.5),
    "sub_": lambda L, x, y: (x * 2).sub_(y, alpha=0.5),
    "mul_": lambda L, x, y: (x + 0).mul_(y),
    "div_": lambda L, x, y: (x + 0).div_(y),
    "iadd": lambda L, x, y: _iop(x * 1, y, "add"),
    "isub": lambda L, x, y: _iop(x * 1, y, "sub"),
    "imul": lambda L, x, y: _iop(x * 1, y, "mul"),
    "idiv": lambda L, x, y: _iop(x * 1, y, "div"),
    "scalar_ops": lambda L, x, y: (x * y).add_(2).mul_(3).sub_(1).div_(4),
    "clamp_": lambda L, x, y: (x * y).clamp_(-1.0, 1.5),
    "zero_": lambda L, x, y: (x * y).zero_() + y,
    "fill_": lambda L, x, y: (x * y).fill_(2.5) * y,
    "copy_": lambda L, x, y: (x * 2).copy_(y) * x,
    "copy_broadcast": lambda L, x, y: (x * 2).copy_(y[0]) * x,
    "masked_fill_": lambda L, x, y: (x * y).masked_fill_(L.tensor(X > 0.7), -3.0),
    "scatter_": lambda L, x, y: (x * 1).scatter_(1, L.tensor([[2, 0], [1, 2]]), y[:, :2]),
    "scatter_value": lambda L, x, y: (x * y).scatter_(0, L.tensor([[1, 0, 1]]), 7.0),
    "scatter_add_": lambda L, x, y: (x * 1).scatter_add_(1, L.tensor([[2, 2], [0, 2]]), y[:, :2]),
    "index_add_": lambda L, x, y: (x * 1).index_add_(1, L.tensor([2, 0, 2]), y, alpha=2.0),
    "index_add_dim0": lambda L, x, y: (x * 1).index_add_(0, L.tensor([1, 1]), y),
    "plain_into_graph": lambda L, x, y: L.zeros(2, 3, dtype=L.float64).add_(x).mul_(y),
    "twice_then_use": lambda L, x, y: _twice(x, y),
    "setitem": lambda L, x, y: _setitem(L, x, y),
    "setitem_into_plain": lambda L, x, y: _setitem(L, L.zeros(2, 3, dtype=L.float64), y) * x,
}


def _setitem(L, x, y):
    h = x * 1
    h[0] = y[1]  # a value that requires grad
    h[:, 1] = 5.0
    h[L.tensor([[False, True, False], [True, False, True]])] = y[0, 0] * 2
    h[1, L.tensor([2, 0])] = y[0, :2]
    return h * y


def _iop(a, b, op: str):
    if op == "add":
        a += b
    elif op == "sub":
        a -= b
    elif op == "mul":
        a *= b
    else:
        a /= b
    return a


def _twice(x, y):
    h = x * y
    h.add_(1)
    h.mul_(x)  # mul saves the snapshot of h, not the array written next
    h += y
    return h * 2


@pytest.mark.parametrize("name", list(CASES))
def test_inplace_values_and_gradients_match_torch(name: str) -> None:
    _both(CASES[name])


def test_returns_self_and_shares_memory() -> None:
    a = hg.zeros(3, dtype=hg.float64)
    d = a.detach()
    v = np.asarray(a)
    assert a.add_(1) is a
    a += 1
    assert a.tolist() == [2.0, 2.0, 2.0] and d.tolist() == [2.0, 2.0, 2.0] and v.tolist() == [2.0, 2.0, 2.0]
    assert a._version == 2 and d._version == 2  # detach shares the counter, as in PyTorch
    b = a
    b *= 3
    assert b is a and a.tolist() == [6.0, 6.0, 6.0]


def test_random_fills_are_seeded_and_in_range() -> None:
    hg.manual_seed(1)
    a = hg.zeros(2000, dtype=hg.float64).uniform_(-2.0, 3.0)
    assert a.numpy().min() >= -2.0 and a.numpy().max() < 3.0 and abs(a.numpy().mean() - 0.5) < 0.1
    n = hg.zeros(4000, dtype=hg.float64).normal_(1.0, 2.0)
    assert abs(n.numpy().mean() - 1.0) < 0.15 and abs(n.numpy().std() - 2.0) < 0.15
    hg.manual_seed(1)
    assert hg.zeros(2000, dtype=hg.float64).uniform_(-2.0, 3.0).tolist() == a.tolist()
    x = hg.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 2).normal_()  # in a graph: the gradient to the old value is 0, as PyTorch's
    (h * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), h.detach().numpy())


def test_dtype_rules_like_torch() -> None:
    i = hg.tensor([1, 2, 3])
    i.add_(2)
    assert i.dtype == hg.int64 and i.tolist() == [3, 4, 5]
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type int64"):
        i.add_(0.5)
    f = hg.zeros(3, dtype=hg.float32)
    f.fill_(2)
    f.copy_(hg.tensor([1, 2, 3]))
    assert f.dtype == hg.float32 and f.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="does not match the tensor of shape"):
        hg.zeros(3).add_(hg.zeros(2, 3))


# -- the version counter ------------------------------------------------------------------------------------
def _error_both(fn) -> None:
    """``fn(lib)`` must make backward raise in both libraries, with PyTorch's wording."""
    for lib in (hg, torch):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            fn(lib)


def test_version_error_when_a_saved_input_is_modified() -> None:
    def prog(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        s = x.sigmoid()
        y = s * s  # mul saves s
        s.mul_(2)
        y.sum().backward()
    _error_both(prog)


def test_version_error_when_a_saved_output_is_modified() -> None:
    def prog(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        e = x.exp()  # exp saves its output
        e.add_(1)
        e.sum().backward()
    _error_both(prog)


def test_version_error_through_a_constant_and_detach() -> None:
    def prog(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        w = L.tensor([2.0, 2.0, 2.0])
        y = x * w  # saves w (needed for x's gradient)
        w.detach().zero_()  # the alias shares the version counter
        y.sum().backward()
    _error_both(prog)


def test_version_error_through_setitem() -> None:
    def saved_input(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        s = x.tanh()
        y = s * x  # saves s
        s[0] = 0.0
        y.sum().backward()

    def plain_constant(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        w = L.tensor([2.0, 2.0, 2.0])
        y = x * w
        w[1] = 7.0  # a direct write outside the graph still bumps the version
        y.sum().backward()
    _error_both(saved_input)
    _error_both(plain_constant)


def test_no_error_where_nothing_saved_was_modified() -> None:
    for lib in (hg, torch):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x + 1  # add saves nothing
        y.mul_(3)  # mul_ after: gradient 3
        z = x * 2
        z.add_(5)
        (y + z).sum().backward()
        assert x.grad.tolist() == [5.0, 5.0, 5.0]


def test_leaf_that_requires_grad_refuses_outside_no_grad() -> None:
    p = hg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        p.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p += 1
    with hg.no_grad():
        p.mul_(2).sub_(hg.tensor([1.0, 1.0]), alpha=0.5)
        p -= 0.5
    assert p.tolist() == [1.0, 3.0] and p.is_leaf and p.requires_grad and p.grad_fn is None


def test_optimizer_style_update_keeps_parameter_identity() -> None:
    import handgrad.nn as nn

    lin = nn.Linear(3, 2, dtype=np.float64)
    w = lin.weight
    before = w.numpy().copy()
    x = hg.tensor(np.ones((4, 3)))
    lin(x).sum().backward()
    with hg.no_grad():
        w.add_(w.grad, alpha=-0.1)
    assert lin.weight is w
    np.testing.assert_allclose(w.numpy(), before - 0.1 * w.grad.numpy())


# -- view vs reshape ----------------------------------------------------------------------------------------
def test_view_of_non_contiguous_raises_like_torch_and_reshape_copies() -> None:
    for lib in (hg, torch):
        x = lib.tensor(np.arange(12.0).reshape(3, 4))
        assert tuple(x.view(4, 3).shape) == (4, 3) and tuple(x.view(-1).shape) == (12,)
        with pytest.raises(RuntimeError, match="view size is not compatible with input tensor's size and stride"):
            x.t().view(12)
        np.testing.assert_array_equal(np.asarray(x.t().reshape(12)), np.arange(12.0).reshape(3, 4).T.ravel())
    a = hg.tensor(np.arange(6.0).reshape(2, 3))
    v = a.view(3, 2)
    a.add_(1)  # a view shares the data: it sees the write, as in PyTorch
    assert v.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_version_error_when_a_saved_output_is_written_under_no_grad() -> None:
    def prog(L):
        x = L.tensor([1.0, 2.0], requires_grad=True)
        e = x.exp()
        with L.no_grad():
            e.add_(1)
        e.sum().backward()
    _error_both(prog)


def test_inplace_into_an_unmarked_view_of_a_graph_tensor_is_refused_not_wrong() -> None:
    """View ops record their base (tests/test_inplace_views.py: the base's graph is rewritten, as PyTorch's
    CopySlices). A view made by a Function called directly (not a view op) cannot be rewritten: refused
    clearly rather than give the base a wrong gradient. Copies (advanced indexing) and writes outside the
    graph are fine."""
    from handgrad.engine.ops.shape import ReshapeFunction

    a = hg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = a * 2
    with pytest.raises(RuntimeError, match="in-place write into a view .* that requires grad"):
        ReshapeFunction((3, 1))(x).add_(1)
    h = x[hg.tensor([0, 1])]  # advanced indexing copies
    h.mul_(3)
    (h.sum() + x.sum()).backward()
    assert a.grad.tolist() == [8.0, 8.0, 2.0]
    c = hg.tensor([1.0, 2.0, 3.0])
    c[0:2].mul_(2)  # outside the graph a view writes through, as in PyTorch
    assert c.tolist() == [2.0, 4.0, 3.0]
