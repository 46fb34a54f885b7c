"""Indexing: x[index] for every index kind, setitem, gather, scatter_add, index_select, where,
masked_fill; against finite differences and PyTorch."""

import numpy as np
import pytest
import torch
from test_ops_common import check_op, randn

import handgrad as hg

MASK = np.random.default_rng(0).random((4, 5)) > 0.5
ROWMASK = np.array([True, False, True, True])
IDX = [
    ("int", lambda: 2),
    ("neg_int", lambda: -1),
    ("slice", lambda: slice(1, 3)),
    ("slice_step", lambda: (slice(None, None, 2), slice(1, 5, 3))),
    ("tuple_ints", lambda: (1, -2)),
    ("none", lambda: (None, 1, None)),
    ("ellipsis", lambda: (Ellipsis, 2)),
    ("ellipsis_none", lambda: (0, Ellipsis, None)),
    ("list", lambda: [0, 2, 2, 3]),
    ("neg_list", lambda: [-1, 0, -1]),
    ("int_array", lambda: np.array([[0, 1], [3, 3]])),
    ("two_arrays", lambda: (np.array([0, 2, 2]), np.array([1, 1, 4]))),
    ("broadcast_arrays", lambda: (np.array([[0], [3]]), np.array([1, 2, 1]))),
    ("array_and_slice", lambda: (slice(1, None), np.array([0, 0, 4]))),
    ("slice_and_list", lambda: (slice(None), [4, 0, 4])),
    ("split_advanced", lambda: (np.array([0, 1]), slice(None), np.array([1, 1]))),
    ("bool_full", lambda: MASK),
    ("bool_rows", lambda: ROWMASK),
    ("bool_list", lambda: [True, False, False, True]),
    ("bool_and_slice", lambda: (ROWMASK, slice(1, 3))),
    ("scalar_int_array", lambda: np.array(2)),
]


@pytest.mark.parametrize("name,make", IDX, ids=[i[0] for i in IDX])
def test_getitem(name, make):
    shape = (4, 5, 3) if name in ("split_advanced", "ellipsis_none") else (4, 5)
    x = randn(*shape, seed=1)
    idx = make()

    def conv(lib):
        def c(p):
            if isinstance(p, np.ndarray):
                return hg.tensor(p) if lib == "hg" else torch.from_numpy(p)
            return p
        return tuple(c(p) for p in idx) if isinstance(idx, tuple) else c(idx)

    hidx, tidx = conv("hg"), conv("torch")
    check_op(lambda t: t[hidx], lambda t: t[tidx], [x])


def test_getitem_numpy_index_and_chained():
    x = randn(4, 5, seed=2)
    check_op(lambda t: t[np.array([1, 1, 0])], lambda t: t[torch.tensor([1, 1, 0])], [x])
    check_op(lambda t: t[1:][:, [0, 0]][0], lambda t: t[1:][:, [0, 0]][0], [x])
    check_op(lambda t: t[t > 0.0], lambda t: t[t > 0.0], [x])
    check_op(lambda t: t[..., None][:, 2], lambda t: t[..., None][:, 2], [x])


def test_getitem_negative_step_against_numpy():
    """torch has no negative slice steps; NumPy semantics apply (and the gradient is checked)."""
    a = randn(4, 5, seed=3)
    x = hg.tensor(a, requires_grad=True)
    np.testing.assert_array_equal(x[::-1, 4:0:-2].numpy(), a[::-1, 4:0:-2])
    x[::-1, 4:0:-2].sum().backward()
    expect = np.zeros((4, 5))
    expect[:, 4:0:-2] = 1
    np.testing.assert_array_equal(x.grad.numpy(), expect)
    assert hg.gradcheck(lambda t: t[::-2, ::-1] * t[::-2, ::-1], hg.tensor(a, requires_grad=True))


def test_getitem_repeated_indices_accumulate():
    x = hg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


@pytest.mark.parametrize("rows,idx", [(20, [[1, 1, -3], [5, 1, 19]]), (3, [0, 2, 2, -1, 0, 1, 1]), (50, [7])])
def test_row_index_accumulation_paths(rows, idx):
    """x[int_array] and index_select sum repeated rows by bincount (dense) or sort + reduceat (sparse)."""
    x, i = randn(rows, 3, 2, seed=5), np.array(idx)
    check_op(lambda t, j: t[j], lambda t, j: t[j], [x, i])
    flat = i.reshape(-1) % rows
    check_op(lambda t, j: t.index_select(0, j), lambda t, j: t.index_select(0, j), [x, flat])
    check_op(lambda t, j: t.index_select(2, j), lambda t, j: t.index_select(2, j), [x, flat % 2])


def test_getitem_errors():
    x = hg.randn(4, 5)
    with pytest.raises(IndexError, match=r"getitem: index 7 is invalid for a tensor of shape \(4, 5\)"):
        x[7]
    with pytest.raises(IndexError, match=r"getitem: .* shape \(4, 5\)"):
        x[[0, 9]]
    with pytest.raises(IndexError, match="integer or boolean"):
        x[hg.tensor([0.0, 1.0])]
    with pytest.raises(IndexError, match=r"getitem: .*shape \(4, 5\)"):
        x[np.ones(3, bool)]


def test_setitem_outside_graph_and_refusal_inside():
    x = hg.zeros(3, 4)
    x[1] = 2.0
    x[:, hg.tensor([0, 3])] = hg.ones(3, 2)
    x[hg.tensor([[True, False, False, False]] * 3)] = -1.0
    expect = np.zeros((3, 4))
    expect[1] = 2.0
    expect[:, [0, 3]] = 1.0
    expect[:, 0] = -1.0
    np.testing.assert_array_equal(x.numpy(), expect)
    w = hg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError,
                       match="setitem: a view of a leaf Variable that requires grad is being used in an in-place"):
        w[0] = 1.0
    with hg.no_grad():
        w[0] = 1.0
    assert w.numpy()[0] == 1.0
    with pytest.raises(ValueError, match="setitem: cannot assign"):
        x[0] = hg.ones(5)


GATHER = [
    (0, (3, 4), (5, 4)),
    (1, (3, 4), (3, 7)),
    (1, (3, 4), (2, 3)),
    (-1, (2, 3, 4), (2, 2, 6)),
    (0, (5,), (8,)),
]


@pytest.mark.parametrize("dim,xs,ish", GATHER)
def test_gather(dim, xs, ish):
    rng = np.random.default_rng(3)
    x = randn(*xs, seed=4)
    idx = rng.integers(0, xs[dim], ish)
    check_op(lambda t, i: hg.gather(t, dim, i), lambda t, i: torch.gather(t, dim, i), [x, idx])
    check_op(lambda t, i: t.gather(dim, i), lambda t, i: t.gather(dim, i), [x, idx])


@pytest.mark.parametrize("dim,xs,ish,ss", [(0, (4, 3), (6, 3), (6, 3)), (1, (3, 5), (2, 7), (3, 8)),
                                           (-1, (2, 3, 4), (2, 3, 5), (2, 3, 5)), (0, (4,), (9,), (10,))])
def test_scatter_add(dim, xs, ish, ss):
    rng = np.random.default_rng(5)
    idx = rng.integers(0, xs[dim], ish)
    # torch's own backward rejects a src larger than index (its gradient has index's shape): there the
    # src gradient is checked by finite differences only
    src_grad = ss == ish
    check_op(lambda t, i, s: hg.scatter_add(t, dim, i, s), lambda t, i, s: torch.scatter_add(t, dim, i, s),
             [randn(*xs, seed=6), idx, randn(*ss, seed=7)], grad=[True, False, src_grad])
    assert hg.gradcheck(lambda t, s: hg.scatter_add(t, dim, hg.tensor(idx), s),
                        (hg.tensor(randn(*xs), requires_grad=True), hg.tensor(randn(*ss), requires_grad=True)))
    check_op(lambda t, i, s: t.scatter_add(dim, i, s), lambda t, i, s: t.scatter_add(dim, i, s),
             [randn(*xs, seed=6), idx, randn(*ss, seed=7)], grad=[False, False, src_grad])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select(dim):
    x = randn(4, 5, 3, seed=8)
    idx = np.array([0, 2, 2, 1, 0])[: x.shape[dim] + 1] % x.shape[dim]
    check_op(lambda t, i: hg.index_select(t, dim, i), lambda t, i: torch.index_select(t, dim, i), [x, idx])
    check_op(lambda t, i: t.index_select(dim, i), lambda t, i: t.index_select(dim, i), [x, np.array(1)])


@pytest.mark.parametrize("cs,as_,bs", [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((4,), (2, 4), ()),
                                       ((2, 1, 4), (3, 1), (1, 4))])
def test_where(cs, as_, bs):
    cond = np.random.default_rng(9).random(cs) > 0.4
    check_op(lambda c, a, b: hg.where(c, a, b), lambda c, a, b: torch.where(c, a, b),
             [cond, randn(*as_, seed=1), randn(*bs, seed=2)])
    check_op(lambda c, a, b: a.where(c, b), lambda c, a, b: a.where(c, b), [cond, randn(*as_, seed=1),
                                                                         randn(*bs, seed=2)])


def test_where_with_scalars_and_single_argument():
    cond = np.array([[True, False], [False, True]])
    x = randn(2, 2)
    check_op(lambda c, a: hg.where(c, a, 0.0), lambda c, a: torch.where(c, a, 0.0), [cond, x])
    check_op(lambda c, a: hg.where(c, -1.5, a), lambda c, a: torch.where(c, -1.5, a), [cond, x])
    h = hg.where(hg.tensor(cond), 1.0, 0.0)
    assert h.dtype == np.float32
    np.testing.assert_array_equal(h.numpy(), cond.astype(float))
    rows, cols = hg.where(hg.tensor(cond))
    np.testing.assert_array_equal(rows.numpy(), [0, 1])
    np.testing.assert_array_equal(cols.numpy(), [0, 1])


@pytest.mark.parametrize("ms", [(3, 4), (4,), (3, 1)])
def test_masked_fill(ms):
    mask = np.random.default_rng(10).random(ms) > 0.5
    x = randn(3, 4)
    check_op(lambda t, m: hg.masked_fill(t, m, -2.0), lambda t, m: torch.masked_fill(t, m, -2.0), [x, mask])
    check_op(lambda t, m: t.masked_fill(m, float("-inf")).exp(), lambda t, m: t.masked_fill(m, float("-inf")).exp(),
             [x, mask])
    check_op(lambda t, m, v: t.masked_fill(m, v), lambda t, m, v: t.masked_fill(m, v), [x, mask, np.array(0.7)])


def test_indexing_errors_name_op_and_shapes():
    x = hg.randn(3, 4)
    with pytest.raises(IndexError, match=r"gather: index 4 is out of bounds for dim 1 with size 4"):
        x.gather(1, hg.tensor([[0, 4]]))
    with pytest.raises(IndexError, match=r"gather: index -1 is out of bounds"):
        x.gather(0, hg.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match=r"gather: index \(2,\) must have as many dims as input \(3, 4\)"):
        x.gather(0, hg.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"gather: size of index \(4, 4\) exceeds input \(3, 4\) at dim 0"):
        x.gather(1, hg.zeros(4, 4, dtype="int64"))
    with pytest.raises(TypeError, match="gather: index must be an integer tensor"):
        x.gather(1, hg.zeros(3, 4))
    with pytest.raises(IndexError, match="gather: dim 2"):
        x.gather(2, hg.zeros(3, 4, dtype="int64"))
    with pytest.raises(IndexError, match="scatter_add: index 3 is out of bounds for dim 0 with size 3"):
        x.scatter_add(0, hg.tensor([[3]]), hg.ones(1, 1))
    with pytest.raises(ValueError, match=r"scatter_add: index \(2, 2\) is larger than src \(1, 2\)"):
        x.scatter_add(0, hg.zeros(2, 2, dtype="int64"), hg.ones(1, 2))
    with pytest.raises(ValueError, match="scatter_add: .* must have the same number of dims"):
        x.scatter_add(0, hg.zeros(2, dtype="int64"), hg.ones(2))
    with pytest.raises(ValueError, match=r"index_select: index must be 0-D or 1-D, got shape \(1, 2\)"):
        x.index_select(0, hg.tensor([[0, 1]]))
    with pytest.raises(IndexError, match="index_select: index 5 is out of bounds for dim 1 with size 4"):
        x.index_select(1, hg.tensor([5]))
    with pytest.raises(TypeError, match="where: expected a boolean condition"):
        hg.where(hg.ones(3, 4), x, x)
    with pytest.raises(ValueError, match=r"where: condition \(2,\), input \(3, 4\) and other \(3, 4\) cannot be"):
        hg.where(hg.tensor([True, False]), x, x)
    with pytest.raises(TypeError, match="where: input dtype float32 and other dtype float64"):
        hg.where(x > 0, x, x.double())
    with pytest.raises(ValueError, match=r"masked_fill: mask of shape \(2, 3, 4\) does not broadcast to input"):
        x.masked_fill(hg.zeros(2, 3, 4) > 0, 1.0)
    with pytest.raises(ValueError, match="masked_fill: value must be a number or a 0-d tensor"):
        x.masked_fill(x > 0, hg.ones(2))
    with pytest.raises(TypeError, match="masked_fill: expected a boolean"):
        x.masked_fill(hg.ones(3, 4), 1.0)
