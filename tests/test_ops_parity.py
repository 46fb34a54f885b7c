"""Everyday PyTorch ops and Tensor methods (issue 10): mm, bmm, einsum, topk, sort, argsort, cumsum,
cumprod, tril, triu, flip, roll, repeat, repeat_interleave, norm / linalg.norm, multinomial, and the
methods t, T, mT, contiguous, narrow, new_*, format. Every differentiable one through ``check_op``:
forward and backward equal to PyTorch's (float64, rtol 1e-8), gradcheck, float32 forward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ops_common import check_op

import handgrad as hg

R = np.random.default_rng(0)


def _r(*shape: int) -> np.ndarray:
    return R.standard_normal(shape)


# -- products ------------------------------------------------------------------------------------------------
def test_mm_bmm() -> None:
    check_op(hg.mm, torch.mm, [_r(3, 4), _r(4, 5)])
    check_op(lambda a, b: a.mm(b), lambda a, b: a.mm(b), [_r(3, 4), _r(4, 2)])
    check_op(hg.bmm, torch.bmm, [_r(2, 3, 4), _r(2, 4, 5)])
    check_op(lambda a, b: a.bmm(b), lambda a, b: a.bmm(b), [_r(2, 3, 4), _r(2, 4, 5)])
    with pytest.raises(ValueError, match="mm: expected 2-D"):
        hg.mm(hg.zeros(2, 3, 4), hg.zeros(4, 2))
    with pytest.raises(ValueError, match="bmm: batch sizes differ"):
        hg.bmm(hg.zeros(2, 3, 4), hg.zeros(3, 4, 2))


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("ii->i", [(4, 4)]),  # diagonal
    ("ii", [(4, 4)]),  # trace, implicit output
    ("i,j->ij", [(3,), (4,)]),  # outer
    ("ij,ij->i", [(3, 4), (3, 4)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),  # attention scores
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ijk->kji", [(2, 3, 4)]),
    ("ij,k->ijk", [(2, 3), (2,)]),
    ("iij->j", [(3, 3, 2)]),
]


@pytest.mark.parametrize(("eq", "shapes"), EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum(eq: str, shapes: list[tuple[int, ...]]) -> None:
    check_op(lambda *xs: hg.einsum(eq, *xs), lambda *xs: torch.einsum(eq, *xs), [_r(*s) for s in shapes])


def test_einsum_errors_and_list_form() -> None:
    a, b = hg.tensor(_r(2, 3)), hg.tensor(_r(4, 5))
    with pytest.raises(ValueError, match="subscript 'j' has size 3 in one operand and 4"):
        hg.einsum("ij,jk->ik", a, b)
    with pytest.raises(ValueError, match="names 2 operands but 1"):
        hg.einsum("ij,jk->ik", a)
    np.testing.assert_allclose(hg.einsum("ij->ji", [a]).numpy(), a.numpy().T)


# -- sorting -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_argsort(dim: int, descending: bool) -> None:
    x = R.permutation(20).reshape(4, 5) + 0.5 * _r(4, 5)  # distinct values: no tie-order ambiguity
    check_op(lambda a: hg.sort(a, dim, descending), lambda a: torch.sort(a, dim, descending), [x])
    check_op(lambda a: a.sort(dim, descending=descending).values,
             lambda a: a.sort(dim, descending=descending).values, [x])
    got = hg.argsort(hg.tensor(x), dim, descending).numpy()
    np.testing.assert_array_equal(got, torch.argsort(torch.tensor(x), dim, descending).numpy())


def test_sort_nan_and_ties_like_torch() -> None:
    x = np.array([3.0, np.nan, 1.0, 3.0, -np.inf, 1.0])
    for desc in (False, True):
        v, i = hg.sort(hg.tensor(x), descending=desc)
        tv, ti = torch.sort(torch.tensor(x), descending=desc, stable=True)
        np.testing.assert_array_equal(v.numpy(), tv.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())


@pytest.mark.parametrize(("k", "dim", "largest"), [(2, -1, True), (3, 0, False), (1, 1, True), (6, -1, False)])
def test_topk(k: int, dim: int, largest: bool) -> None:
    x = R.permutation(30).reshape(5, 6) + 0.25 * _r(5, 6)
    check_op(lambda a: hg.topk(a, k, dim, largest), lambda a: torch.topk(a, k, dim, largest), [x])
    check_op(lambda a: a.topk(k, dim=dim, largest=largest)[0], lambda a: a.topk(k, dim=dim, largest=largest)[0], [x])
    assert hg.topk(hg.tensor(x), 0)[0].shape == tuple(torch.topk(torch.tensor(x), 0)[0].shape)
    with pytest.raises(ValueError, match="topk: k=9 is out of range"):
        hg.topk(hg.tensor(x), 9, dim=0)


# -- scans ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumsum_cumprod(dim: int) -> None:
    x = _r(3, 4, 5)
    check_op(lambda a: hg.cumsum(a, dim), lambda a: torch.cumsum(a, dim), [x])
    check_op(lambda a: a.cumprod(dim), lambda a: a.cumprod(dim), [x])


def test_cumprod_gradient_with_zeros() -> None:
    x = _r(3, 6)
    x[0, 2] = 0.0
    x[1, 1] = x[1, 4] = 0.0  # two zeros in one slice
    x[2, 0] = 0.0
    check_op(lambda a: hg.cumprod(a, 1), lambda a: torch.cumprod(a, 1), [x])
    check_op(lambda a: hg.cumprod(a, 0), lambda a: torch.cumprod(a, 0), [x])


def test_cumsum_of_ints_is_int64_like_torch() -> None:
    t = hg.cumsum(hg.tensor([1, 2, 3], dtype=hg.int32), 0)
    assert t.dtype == hg.int64 and t.tolist() == [1, 3, 6]
    assert hg.cumsum(hg.tensor([True, True]), 0).tolist() == [1, 2]


# -- rearranging ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("diagonal", [0, 1, -2])
def test_tril_triu(diagonal: int) -> None:
    check_op(lambda a: hg.tril(a, diagonal), lambda a: torch.tril(a, diagonal), [_r(2, 4, 5)])
    check_op(lambda a: a.triu(diagonal), lambda a: a.triu(diagonal), [_r(4, 3)])


def test_flip_roll() -> None:
    check_op(lambda a: hg.flip(a, (0, 2)), lambda a: torch.flip(a, (0, 2)), [_r(2, 3, 4)])
    check_op(lambda a: a.flip(1), lambda a: a.flip(1), [_r(2, 3, 4)])
    check_op(lambda a: hg.roll(a, 2), lambda a: torch.roll(a, 2), [_r(3, 4)])
    check_op(lambda a: hg.roll(a, (1, -2), (0, 1)), lambda a: torch.roll(a, (1, -2), (0, 1)), [_r(3, 4)])
    check_op(lambda a: a.roll(-1, 1), lambda a: a.roll(-1, 1), [_r(3, 4)])


@pytest.mark.parametrize("sizes", [(2, 3), (1, 1), (2, 1, 3), (3, 2, 2)])
def test_repeat(sizes: tuple[int, ...]) -> None:
    check_op(lambda a: a.repeat(*sizes), lambda a: a.repeat(*sizes), [_r(2, 3)])
    check_op(lambda a: a.repeat(sizes), lambda a: a.repeat(sizes), [_r(2, 3)])


def test_repeat_interleave() -> None:
    check_op(lambda a: hg.repeat_interleave(a, 2), lambda a: torch.repeat_interleave(a, 2), [_r(2, 3)])
    check_op(lambda a: a.repeat_interleave(3, dim=1), lambda a: a.repeat_interleave(3, dim=1), [_r(2, 3)])
    reps = [1, 0, 3]
    check_op(lambda a: hg.repeat_interleave(a, hg.tensor(reps), dim=1),
             lambda a: torch.repeat_interleave(a, torch.tensor(reps), dim=1), [_r(2, 3)])
    with pytest.raises(ValueError, match="one per element"):
        hg.repeat_interleave(hg.zeros(2, 3), [1, 2], dim=1)


# -- norms ---------------------------------------------------------------------------------------------------
NORMS = [(2, None), (1, None), (3, 1), (0.5, 0), (math.inf, 1), (-math.inf, 1), (2, (0, 1)), (1.5, -1), ("fro", None)]


@pytest.mark.parametrize(("p", "dim"), NORMS)
@pytest.mark.parametrize("keepdim", [False, True])
def test_norm(p, dim, keepdim: bool) -> None:
    x = _r(3, 4) + np.sign(_r(3, 4)) * 0.3  # away from 0, where |x|^(p-1) is not smooth
    check_op(lambda a: hg.norm(a, p, dim, keepdim), lambda a: torch.norm(a, p, dim, keepdim), [x])
    check_op(lambda a: a.norm(p, dim, keepdim), lambda a: a.norm(p, dim, keepdim), [x])


@pytest.mark.parametrize(("ord", "dim"), [(None, None), (2, 1), (1, 0), (math.inf, -1), ("fro", (0, 1)), (3, 1)])
def test_linalg_norm(ord, dim) -> None:  # noqa: A002
    x = _r(3, 4) + np.sign(_r(3, 4)) * 0.3
    check_op(lambda a: hg.linalg.norm(a, ord, dim), lambda a: torch.linalg.norm(a, ord, dim), [x])
    check_op(lambda a: hg.linalg.vector_norm(a, 3, dim=1), lambda a: torch.linalg.vector_norm(a, 3, dim=1), [x])


def test_norm_at_zero_and_ties_like_torch() -> None:
    x = np.array([[0.0, 0.0, 0.0], [1.0, -3.0, 3.0]])
    for p in (2, 3, math.inf):
        a, t = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        hg.norm(a, p, 1).sum().backward()
        torch.norm(t, p, 1).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=0)


# -- sampling ------------------------------------------------------------------------------------------------
def test_multinomial_frequencies_and_rules() -> None:
    hg.manual_seed(0)
    w = hg.tensor([1.0, 0.0, 3.0, 6.0])
    s = hg.multinomial(w, 20000, replacement=True)
    assert s.dtype == hg.int64 and s.shape == (20000,)
    freq = np.bincount(s.numpy(), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.3, 0.6], atol=0.015)
    rows = hg.multinomial(hg.tensor([[1.0, 1.0, 1.0], [0.0, 5.0, 1.0]]), 2)
    assert rows.shape == (2, 2)
    for r in rows.numpy():
        assert len(set(r.tolist())) == 2  # without replacement: no repeats in a row
    assert 0 not in rows.numpy()[1].tolist() or False
    # without replacement the first draw follows p, the second the renormalised rest
    first = np.bincount(np.array([hg.multinomial(w, 3).numpy() for _ in range(3000)])[:, 0], minlength=4) / 3000
    np.testing.assert_allclose(first, [0.1, 0.0, 0.3, 0.6], atol=0.03)
    with pytest.raises(ValueError, match="without replacement from 3 categories"):
        hg.multinomial(w, 4)
    with pytest.raises(ValueError, match="non-negative"):
        hg.multinomial(hg.tensor([1.0, -1.0]), 1)
    hg.manual_seed(3)
    a = w.multinomial(5, replacement=True).tolist()
    hg.manual_seed(3)
    assert hg.multinomial(w, 5, True).tolist() == a  # seeded


# -- methods -------------------------------------------------------------------------------------------------
def test_transposes_and_layout_methods() -> None:
    check_op(lambda a: a.t(), lambda a: a.t(), [_r(3, 4)])
    check_op(lambda a: a.t(), lambda a: a.t(), [_r(3)])
    check_op(lambda a: a.T, lambda a: a.T, [_r(3, 4)])
    check_op(lambda a: a.mT, lambda a: a.mT, [_r(2, 3, 4)])
    check_op(lambda a: a.narrow(1, 1, 2), lambda a: a.narrow(1, 1, 2), [_r(3, 4)])
    check_op(lambda a: a.narrow(0, -2, 2), lambda a: a.narrow(0, -2, 2), [_r(3, 4)])
    check_op(lambda a: a.t().contiguous(), lambda a: a.t().contiguous(), [_r(3, 4)])
    x = hg.tensor(_r(3, 4))
    assert x.contiguous() is x and not x.t().is_contiguous() and x.t().contiguous().is_contiguous()
    with pytest.raises(ValueError, match="t: expects a tensor with <= 2 dims"):
        hg.zeros(2, 3, 4).t()
    with pytest.raises(IndexError, match="narrow"):
        x.narrow(1, 3, 2)


def test_new_factories_and_scalars() -> None:
    x = hg.zeros(2, dtype=hg.float64)
    for t, tt in ((x.new_zeros(2, 3), torch.zeros(2, 3)), (x.new_ones((2,)), torch.ones(2)),
                  (x.new_full((2, 2), 7.0), torch.full((2, 2), 7.0)), (x.new_tensor([1, 2]), torch.tensor([1, 2.0])),
                  (x.new_empty(3), torch.empty(3))):
        assert t.dtype == hg.float64 and t.device == x.device and t.shape == tuple(tt.shape)
        if t.shape != (3,):
            np.testing.assert_array_equal(t.numpy(), tt.numpy())
    assert x.new_zeros(2, dtype=hg.long).dtype == hg.int64
    assert x.new_ones(1, requires_grad=True).requires_grad
    s = hg.tensor([2.0 / 3.0])
    assert format(s, ".3f") == "0.667" and f"{s:.2e}" == "6.67e-01" and format(s) == repr(s)
    assert s.item() == pytest.approx(2 / 3) and hg.tensor([[1, 2]]).tolist() == [[1, 2]]
    assert x.cpu() is x and str(x.device) == "cpu"
    with pytest.raises(TypeError, match="one-element tensors"):
        format(hg.zeros(2), ".3f")


def test_scatter_index_add_out_of_place() -> None:
    idx = np.array([[2, 0], [1, 2]])
    check_op(lambda a, s: hg.scatter(a, 1, hg.tensor(idx), s), lambda a, s: torch.scatter(a, 1, torch.tensor(idx), s),
             [_r(2, 3), _r(2, 2)])
    check_op(lambda a: hg.scatter(a, 0, hg.tensor([[1, 0, 1]]), value=2.5),
             lambda a: torch.scatter(a, 0, torch.tensor([[1, 0, 1]]), 2.5), [_r(2, 3)])
    ii = np.array([2, 0, 2])
    check_op(lambda a, s: hg.index_add(a, 1, hg.tensor(ii), s, alpha=-1.5),
             lambda a, s: torch.index_add(a, 1, torch.tensor(ii), s, alpha=-1.5), [_r(2, 3), _r(2, 3)])
    with pytest.raises(ValueError, match="index_add: source"):
        hg.index_add(hg.zeros(2, 3), 1, hg.tensor([0, 1]), hg.zeros(2, 3))


def test_python_scalars_from_one_element_tensors_of_any_shape() -> None:
    for t, tt in ((hg.tensor([[2.5]]), torch.tensor([[2.5]])), (hg.tensor([3]), torch.tensor([3]))):
        assert float(t) == float(tt) and int(t) == int(tt) and t.item() == tt.item()
    with pytest.raises(TypeError, match="only one element tensors can be converted to Python scalars"):
        float(hg.tensor([1.0, 2.0]))
