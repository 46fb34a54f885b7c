"""Views and in-place writes as PyTorch has them (issue 10): a view shares its base's version counter, and an
in-place op on a view of a tensor in the graph rewrites the base's graph (CopySlices). Every case runs the
same program on handgrad and PyTorch and compares values and gradients; the rewrite is also gradchecked."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

X = np.array([[0.5, -1.5, 2.0], [3.0, -0.25, 1.0]])
Z = np.array([[1.0, 2.0, -1.0], [0.5, 0.5, 4.0]])
W = np.array([[0.3, -2.0], [1.5, 0.25], [-1.0, 2.5]])


def _run(fn, lib):
    x = lib.tensor(X, requires_grad=True)
    z = lib.tensor(Z, requires_grad=True)
    w = lib.tensor(W, requires_grad=True)
    out = fn(lib, x, z, w)
    weights = lib.tensor(np.arange(1.0, out.numel() + 1.0).reshape(tuple(out.shape)))
    (out * weights).sum().backward()
    grads = [np.zeros(t.shape) if t.grad is None else np.array(t.grad.numpy()) for t in (x, z, w)]
    return [np.array(out.detach().numpy()), *grads]


def _both(fn) -> None:
    for a, b in zip(_run(fn, hg), _run(fn, torch), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _chain_of_views(L, x, z, w):
    y = x * 2
    y[1:].t()[0].mul_(z[0, 0])  # a view of a view of a view
    return y


def _setitem_through_view(L, x, z, w):
    y = x * 2
    y[0][1:] = z[0, :2]
    y.t()[2, :] = w[0]
    return y * x


def _other_views_follow(L, x, z, w):
    y = x * 2
    v1 = y[0:2, 1:]
    v2 = v1[0]  # a view of the view
    v2.mul_(z[0, :2])
    return v1 * 3 + y.sum()  # v1, made before the write, sees it (regenerated creator)


def _base_written_view_used(L, x, z, w):
    y = x * 2
    v = y[1]  # made before the write into the base
    y.mul_(z)
    return v * v


def _consumers_before_write(L, x, z, w):
    y = x * 2
    m = y.sum(0)  # recorded before the write: its gradient reaches the old y
    s = y * 1
    y[0].mul_(3)
    return (m + y[1]) * 2 + s[0]


def _plain_base_into_graph(L, x, z, w):
    b = L.zeros(2, 3, dtype=L.float64)
    other = b[1]  # a view made while b was outside the graph
    b[0].add_(x[0])
    b.narrow(1, 1, 2).mul_(z[:, 1:])
    return b * 2 + other.sum()


def _repeated_writes(L, x, z, w):
    y = x.sin()  # sin saves its input x, not y: writing y is fine (tanh, which saves y, would raise)
    v = y[:, :2]
    v.add_(z[:, :2])
    v.mul_(x[:, 1:])
    v.div_(2.0)
    y[1].sub_(w[:, 0])
    return y


def _zero_d_view(L, x, z, w):
    y = x.reshape(6) * 1
    y[2].mul_(z[0, 0])  # x[i] of a vector is a 0-d view: the write lands in y
    y[-1].fill_(5.0)
    return y


def _unsqueeze_squeeze(L, x, z, w):
    y = x + 0
    y.unsqueeze(0).mul_(z)
    y[0:1].squeeze(0).add_(w[:, 1])
    y.flatten()[::2].mul_(-1.5)
    return y


def _view_used_before_and_after(L, x, z, w):
    y = x * 1
    v = y[:, 1]
    before = v * 2  # the view as it was
    y.mul_(z)  # the base rewritten in place
    after = v * 3  # the view now reads the rewritten base (PyTorch regenerates its grad_fn)
    y[0].add_(1.5)
    again = v.sum()  # and once more
    return before + after + again


def _recurrence_through_setitem(L, x, z, w):
    """The RNN-style loop ``h[t] = f(h[t - 1])`` into one preallocated tensor."""
    h = L.zeros(5, 3, dtype=L.float64)
    h[0] = x[0]
    for t in range(1, 5):
        # (not h[t - 1] * z[1]: mul would save a view of h that the next write modifies, an error in both)
        h[t] = (h[t - 1] + z[1]).tanh() * x[1]
    return h


CASES = {
    "select_mul_": lambda L, x, z, w: _then(x * 2, lambda y: y[0].mul_(3)),
    "slice_copy_": lambda L, x, z, w: _then(x * 2, lambda y: y[:, 1:].copy_(z[:, :2])),
    "t_add_": lambda L, x, z, w: _then(x * 2, lambda y: y.t().add_(w)),
    "transpose_mul_": lambda L, x, z, w: _then(x.sin(), lambda y: y.transpose(0, 1).mul_(w)) * 1,
    "narrow_mul_": lambda L, x, z, w: _then(x * 2, lambda y: y.narrow(1, 1, 2).mul_(z[:, :2])),
    "select_method_add_": lambda L, x, z, w: _then(x * 1, lambda y: y.select(1, 2).add_(z[:, 0])),
    "view_mul_": lambda L, x, z, w: _then(x * 2, lambda y: y.view(6).mul_(z.reshape(6))),
    "reshape_row_zero_": lambda L, x, z, w: _then(x * 2, lambda y: y.reshape(3, 2)[1].zero_()) * z,
    "mT_clamp_": lambda L, x, z, w: _then(x * z, lambda y: y.mT.clamp_(-1.0, 1.0)),
    "T_sub_alpha": lambda L, x, z, w: _then(x * 1, lambda y: y.T.sub_(w, alpha=0.5)),
    "masked_fill_view": lambda L, x, z, w: _then(x * z, lambda y: y[1].masked_fill_(L.tensor([True, False, True]),
                                                                                     0.5)),
    "iadd_view": lambda L, x, z, w: _then(x * 2, lambda y: y[:, 0].__iadd__(z[:, 2])),
    "chain": _chain_of_views,
    "setitem_through_view": _setitem_through_view,
    "other_views_follow": _other_views_follow,
    "base_written_view_used": _base_written_view_used,
    "consumers_before_write": _consumers_before_write,
    "plain_base_into_graph": _plain_base_into_graph,
    "repeated_writes": _repeated_writes,
    "zero_d_view": _zero_d_view,
    "unsqueeze_squeeze_flatten": _unsqueeze_squeeze,
    "view_used_before_and_after": _view_used_before_and_after,
    "recurrence_through_setitem": _recurrence_through_setitem,
}


def _then(y, write):
    write(y)
    return y


@pytest.mark.parametrize("name", list(CASES))
def test_inplace_into_a_view_rewrites_the_base_like_torch(name: str) -> None:
    _both(CASES[name])


def test_consumer_recorded_before_an_inplace_write_keeps_the_old_graph() -> None:
    for lib in (hg, torch):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        h = x * 1
        z = h * 2  # recorded before the write: d z / d x = 2, whatever happens to h later
        h.mul_(3)
        (z.sum() + h.sum()).backward()
        assert x.grad.tolist() == [5.0, 5.0]


@pytest.mark.parametrize("name", ["select_mul_", "slice_copy_", "t_add_", "chain", "setitem_through_view",
                                  "other_views_follow", "plain_base_into_graph", "repeated_writes",
                                  "unsqueeze_squeeze_flatten", "view_used_before_and_after",
                                  "recurrence_through_setitem"])
def test_view_rewrite_gradcheck(name: str) -> None:
    def f(x, z, w):
        return CASES[name](hg, x, z, w)

    rng = np.random.default_rng(0)
    args = [hg.tensor(rng.uniform(0.5, 1.5, a.shape) * np.sign(a), requires_grad=True) for a in (X, Z, W)]
    assert hg.gradcheck(f, tuple(args))


# -- refusals, as PyTorch's -----------------------------------------------------------------------------------
def test_view_of_a_leaf_that_requires_grad_refuses() -> None:
    for lib in (hg, torch):
        x = lib.tensor(X, requires_grad=True)
        for write in (lambda t: t[0].mul_(2), lambda t: t.t().add_(1), lambda t: t.view(6).zero_()):
            with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in "
                                                   "an in-place operation"):
                write(x)
        with lib.no_grad():
            x[0].mul_(2)  # allowed under no_grad, and the leaf sees it
        assert x.detach().numpy()[0].tolist() == [1.0, -3.0, 4.0] and x.is_leaf


def test_multi_output_and_expanded_views_refuse() -> None:
    for lib in (hg, torch):
        y = lib.tensor(X, requires_grad=True) * 2
        with pytest.raises(RuntimeError, match="returns multiple views"):
            y.split(1, dim=0)[0].mul_(2)
        with pytest.raises(RuntimeError, match="returns multiple views"):
            y.unbind(1)[0].add_(1)
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor refers to a single "
                                               "memory location"):
            y[0:1].expand(4, 3).add_(1)


def test_view_made_under_no_grad_refuses_a_graph_write() -> None:
    for lib in (hg, torch):
        y = lib.tensor(X, requires_grad=True) * 2
        with lib.no_grad():
            v = y[0]
        with pytest.raises(RuntimeError, match="view was created in no_grad mode and is being modified inplace "
                                               "with grad mode enabled"):
            v.mul_(2)


# -- the version counter is shared by a base and its views ------------------------------------------------------
VIEWS = {
    "select": lambda t: t[0],
    "slice": lambda t: t[:, 1:],
    "t": lambda t: t.t(),
    "transpose": lambda t: t.transpose(0, 1),
    "narrow": lambda t: t.narrow(1, 0, 2),
    "view": lambda t: t.view(6),
    "reshape_view": lambda t: t.reshape(3, 2),
    "unsqueeze": lambda t: t.unsqueeze(1),
    "squeeze": lambda t: t.unsqueeze(0).squeeze(0),
    "detach": lambda t: t.detach(),
    "view_of_view": lambda t: t.t()[1:],
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_a_write_through_a_view_is_seen_by_nodes_that_saved_the_base(name: str) -> None:
    def prog(L):
        x = L.tensor(X, requires_grad=True)
        c = L.tensor(Z)  # a constant saved by mul for x's gradient
        y = x * c
        VIEWS[name](c).mul_(2)
        y.sum().backward()
    for lib in (hg, torch):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            prog(lib)


@pytest.mark.parametrize("name", ["select", "t", "narrow", "view", "unsqueeze", "expand"])
def test_a_write_into_the_base_is_seen_by_nodes_that_saved_a_view(name: str) -> None:
    make = VIEWS.get(name, lambda t: t[0:1].expand(3, 3))

    def prog(L):
        x = L.tensor(X, requires_grad=True)
        c = L.tensor(Z)
        v = make(c)
        y = (x.sum() * v).sum()  # mul saves the view v
        c.add_(1)
        y.backward()
    for lib in (hg, torch):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            prog(lib)


def test_views_share_the_version_number() -> None:
    for lib in (hg, torch):
        b = lib.tensor(X)
        v, u = b[0], b.t()
        v.add_(1)
        u[0, 0] = 5.0
        b.mul_(2)
        assert b._version == v._version == u._version == 3
        assert b.data._version == 0  # .data has its own counter, as in PyTorch


def test_writes_under_no_grad_into_a_view_of_a_saved_output_raise_at_backward() -> None:
    def prog(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        e = x.exp()  # exp saves its output
        with L.no_grad():
            e[1:].mul_(2)
        e.sum().backward()

    def in_graph(L):
        x = L.tensor([1.0, 2.0, 3.0], requires_grad=True)
        e = x.exp()
        e[0].mul_(2)  # CopySlices over e: exp's saved output is gone
        e.sum().backward()
    for lib in (hg, torch):
        for p in (prog, in_graph):
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                p(lib)


def test_x0_of_a_vector_writes_through_outside_the_graph() -> None:
    for lib in (hg, torch):
        a = lib.tensor([1.0, 2.0, 3.0])
        a[1].mul_(10)
        a.select(0, 2).fill_(-1)
        assert a.tolist() == [1.0, 20.0, -1.0]


def test_a_long_write_loop_stays_linear() -> None:
    """Views are regenerated lazily (when used), not all at every write: a ``h[t] = f(h[t-1])`` loop records
    O(T) nodes (counted by the node sequence number), and its gradient equals PyTorch's."""
    from handgrad.engine.function import _next_seq

    def run(L, steps):
        x = L.tensor(np.linspace(-1.0, 1.0, 4), requires_grad=True)
        h = L.zeros(steps, 4, dtype=L.float64)
        h[0] = x
        for t in range(1, steps):
            h[t] = (h[t - 1] * 0.9).sin() + x * 0.01
        h.sum().backward()
        return x.grad.numpy().copy()

    np.testing.assert_allclose(run(hg, 50), run(torch, 50), rtol=1e-12)
    nodes = []
    for steps in (100, 400):
        start = _next_seq()
        run(hg, steps)
        nodes.append(_next_seq() - start)
    assert nodes[1] < 4.2 * nodes[0], f"nodes for 100 and 400 steps: {nodes}: not linear"


@pytest.mark.parametrize("name", ["select_mul_", "slice_copy_", "t_add_", "view_mul_", "chain", "setitem_through_view",
                                  "other_views_follow", "repeated_writes", "view_used_before_and_after"])
def test_view_rewrite_on_the_device_matches_the_cpu(name: str) -> None:
    """The rewrite's index arithmetic (flat positions, CopySlices, ViewFunction) on the test device (the strict
    CuPy stand-in, or a GPU): values and gradients as on the CPU."""
    from _device import ON_DEVICE, assert_close_to_cpu, device

    if not ON_DEVICE:
        pytest.skip("device pass turned off")
    results = []
    for dev in (None, device()):
        ts = [hg.tensor(a, requires_grad=True) for a in (X, Z, W)]
        if dev is not None:
            ts = [hg.tensor(a).to(dev).requires_grad_() for a in (X, Z, W)]
        out = CASES[name](hg, *ts)
        (out * out).sum().backward()
        results.append([out.detach(), *[t.grad for t in ts]])
    for d, c in zip(results[1], results[0]):
        if c is None:
            assert d is None
        else:
            assert_close_to_cpu(d, c, name)
