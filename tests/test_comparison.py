"""``== != < <= > >=`` are elementwise bool tensors (as in PyTorch), agreeing with ``eq ne lt le gt ge``;
tensors stay hashable by identity; ``isnan isfinite isinf isclose allclose equal`` against PyTorch."""

from __future__ import annotations

import numpy
import pytest

import handgrad as hg
import handgrad.nn

torch = pytest.importorskip("torch")

A = numpy.array([[1.0, 2.0, numpy.nan], [-numpy.inf, 0.0, 3.0]])
B = numpy.array([1.0, 5.0, numpy.nan])
OPS = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("other", ["tensor", "scalar", "int_tensor", "list"])
def test_operators_elementwise_like_torch(name: str, other: str) -> None:
    o_np = {"tensor": B, "scalar": 2.0, "int_tensor": numpy.array([1, 2, 3]), "list": [1.0, 5.0, 3.0]}[other]
    a, t = hg.tensor(A), torch.tensor(A)
    o_hg = hg.tensor(o_np) if isinstance(o_np, numpy.ndarray) else o_np
    o_t = torch.tensor(o_np) if isinstance(o_np, numpy.ndarray) else o_np
    op = OPS[name]
    got = getattr(a, op)(o_hg)
    want = getattr(t, op)(torch.tensor(o_t) if isinstance(o_t, list) else o_t).numpy()
    assert isinstance(got, hg.Tensor) and got.dtype == numpy.bool_
    numpy.testing.assert_array_equal(got.numpy(), want)
    numpy.testing.assert_array_equal(getattr(a, name)(o_hg).numpy(), want)  # the method agrees
    numpy.testing.assert_array_equal(getattr(hg, name)(a, o_hg).numpy(), want)  # and the function


def test_reflected_and_numpy_left_operand() -> None:
    a = hg.tensor([1.0, 2.0, 3.0])
    numpy.testing.assert_array_equal((2.0 == a).numpy(), [False, True, False])
    numpy.testing.assert_array_equal((2.0 < a).numpy(), [False, False, True])
    r = numpy.array([1.0, 0.0, 3.0]) == a
    numpy.testing.assert_array_equal(numpy.asarray(r), [True, False, True])


def test_issue_examples_mask_and_accuracy() -> None:
    y = hg.tensor([3, 0, 0, 7])
    pad = 0
    mask = y == pad
    assert isinstance(mask, hg.Tensor) and mask.tolist() == [False, True, True, False]
    pred = hg.tensor([3, 1, 0, 2])
    assert int((pred == y).sum()) == 2
    assert (pred != y).tolist() == [False, True, False, True]


def test_none_and_hash_by_identity() -> None:
    a, b = hg.tensor([1.0, 2.0]), hg.tensor([1.0, 2.0])
    assert (a == None) is False and (a != None) is True  # noqa: E711 - the operator itself is under test
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b" and len({a, b, a}) == 2
    assert hash(a) == object.__hash__(a)
    p = hg.nn.Parameter(hg.zeros(2))
    assert {p: 1}[p] == 1
    assert a in [a, b]  # identity is checked first, as with PyTorch tensors
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(a == b)  # more than one element: ambiguous, as in PyTorch
    with pytest.raises(RuntimeError, match="with no values is ambiguous"):
        bool(hg.zeros(0))
    assert bool(hg.tensor([2.0]) == 2.0) and not bool(hg.tensor(0.0))


def test_no_gradient_flows_through_comparisons() -> None:
    x = hg.tensor([1.0, -1.0], requires_grad=True)
    m = x > 0
    assert not m.requires_grad and m.grad_fn is None


def test_broadcast_error_names_the_op() -> None:
    with pytest.raises(ValueError, match="eq: shapes"):
        hg.tensor([1.0, 2.0]) == hg.tensor([1.0, 2.0, 3.0])  # noqa: B015


def test_tests_and_closeness_like_torch() -> None:
    a, t = hg.tensor(A), torch.tensor(A)
    for name in ("isnan", "isfinite", "isinf"):
        numpy.testing.assert_array_equal(getattr(a, name)().numpy(), getattr(t, name)().numpy())
        numpy.testing.assert_array_equal(getattr(hg, name)(a).numpy(), getattr(torch, name)(t).numpy())
    c = A + 1e-6
    for kw in ({}, {"rtol": 1e-9, "atol": 0.0}, {"equal_nan": True}):
        numpy.testing.assert_array_equal(hg.isclose(a, hg.tensor(c), **kw).numpy(),
                                         torch.isclose(t, torch.tensor(c), **kw).numpy())
        assert hg.allclose(a, hg.tensor(c), **kw) == torch.allclose(t, torch.tensor(c), **kw)
    assert a.allclose(a, equal_nan=True) and not a.allclose(a)
    assert hg.equal(hg.tensor([1, 2]), hg.tensor([1, 2])) and not hg.equal(hg.tensor([1, 2]), hg.tensor([1, 3]))
    assert not hg.equal(hg.tensor([1, 2]), hg.tensor([[1, 2]]))


def test_logical_ops() -> None:
    p, q = hg.tensor([True, True, False]), hg.tensor([True, False, False])
    assert (p & q).tolist() == [True, False, False]
    assert (p | q).tolist() == [True, True, False]
    assert (p ^ q).tolist() == [False, True, False]
    assert (~p).tolist() == [False, False, True]
    assert p.any().item() and not q.all().item()
