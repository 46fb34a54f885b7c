"""``t.data`` as a PyTorch user writes it (issue 10): every idiom side by side with PyTorch, same values,
same gradients, and the same version-counter rule (writes through ``.data`` are not seen by autograd, so
they do not bump the parameter's version)."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

W0 = np.array([[0.5, -1.5, 2.0], [3.0, -0.25, 1.0]])


def _param(lib):
    return lib.nn.Parameter(lib.tensor(W0.copy()))


def _both(prog):
    """``prog(lib)`` returns a list of arrays/numbers; they must agree between the libraries."""
    out = {}
    for lib in (hg, torch):
        out[lib.__name__] = [np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, dtype=np.float64)
                             for v in prog(lib)]
    for a, b in zip(out["handgrad"], out["torch"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_data_writes_change_the_parameter_without_bumping_its_version() -> None:
    def prog(L):
        w = _param(L)
        v0 = w._version
        w.data.mul_(0.5)
        w.data.add_(L.tensor(np.ones((2, 3))), alpha=-2.0)
        w.data[0] = 1.0
        w.data[1, 2] = -4.0
        w.data.clamp_(-1.5, 1.5)
        assert w._version == v0, "a write through .data must not bump the parameter's version"
        assert w.is_leaf and w.requires_grad and w.grad_fn is None
        return [w, w._version - v0]
    _both(prog)


def test_data_is_detached_and_shares_memory() -> None:
    def prog(L):
        w = _param(L)
        d = w.data
        assert d.requires_grad is False and d.is_leaf and d.grad_fn is None
        arr = w.data.numpy()  # shares memory, as PyTorch's CPU tensors
        arr[0, 0] = 9.0
        d.fill_(0.25)  # the alias writes through
        return [w, arr, d]
    _both(prog)


def test_data_uniform_normal_fill_initialise_in_place() -> None:
    for lib in (hg, torch):
        lib.manual_seed(3)
        w = lib.nn.Parameter(lib.zeros(200, 50, dtype=lib.float64))
        w.data.uniform_(-0.1, 0.1)
        a = w.detach().numpy().copy()
        assert a.min() >= -0.1 and a.max() < 0.1 and abs(a.mean()) < 0.01 and a.std() > 0.05
        w.data.normal_(0.0, 0.02)
        a = w.detach().numpy()
        assert abs(a.mean()) < 0.002 and abs(a.std() - 0.02) < 0.002
        w.data.fill_(0.5)
        assert (w.detach().numpy() == 0.5).all() and w._version == 0 and w.is_leaf


def test_data_copy_and_assignment() -> None:
    def prog(L):
        w = _param(L)
        w.data.copy_(L.tensor(np.arange(6.0).reshape(2, 3)))
        copied = w.detach().clone()
        w.data.copy_(L.tensor([1.0, 2.0, 3.0]))  # broadcast, as PyTorch's copy_
        broadcast = w.detach().clone()
        w.data = L.tensor(np.full((4,), 7.0))  # p.data = t: the parameter now holds t's data (shape may change)
        assert tuple(w.shape) == (4,) and w.requires_grad and w.is_leaf
        return [copied, broadcast, w]
    _both(prog)


def test_hand_written_sgd_through_data_matches_torch() -> None:
    def prog(L):
        w = _param(L)
        x = L.tensor(np.array([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]]))
        losses, lr = [], 0.05
        for _ in range(4):
            loss = ((w @ x).tanh() ** 2).sum()
            loss.backward()
            w.data.add_(w.grad.data, alpha=-lr)  # word_language_model's update
            w.grad.data.zero_()  # the pre-zero_grad idiom
            losses.append(loss.item())
        assert w._version == 0 and (w.grad.numpy() == 0).all()
        return [losses, w]
    _both(prog)


def test_data_write_after_use_in_graph_is_not_an_error() -> None:
    """PyTorch's point of .data: the write is invisible to autograd, so a saved tensor modified through it
    gives no error (and the gradient uses the new values, silently: the user asked for it)."""
    def prog(L):
        w = _param(L)
        x = L.tensor(np.ones((3, 2)))
        y = (w @ x).tanh()  # tanh saves its output; matmul saves w
        w.data.mul_(2.0)
        y.sum().backward()
        return [w.grad]
    _both(prog)


def test_data_of_a_non_leaf_and_of_a_view() -> None:
    def prog(L):
        x = L.tensor(W0.copy(), requires_grad=True)
        h = x * 2
        h.data[0, 0] = 100.0  # no error, no graph change
        (h * x).sum().backward()
        v = h[1]
        v.data.zero_()  # .data of a view shares the base's memory
        return [h, x.grad, v]
    _both(prog)


def test_data_assignment_keeps_parameter_identity() -> None:
    for lib in (hg, torch):
        lin = lib.nn.Linear(3, 2).double()
        w = lin.weight
        w.data = lib.zeros(2, 3, dtype=lib.float64)
        assert lin.weight is w and float(w.detach().sum()) == 0.0
        assert next(iter(lin.parameters())) is w
