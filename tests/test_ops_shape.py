"""Shape ops: reshape/view/permute/transpose/expand/squeeze/unsqueeze/flatten/unflatten, cat/stack,
split/chunk/unbind, pad; against finite differences and PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from test_ops_common import check_op, randn

import handgrad as hg
import handgrad.functional as F

VIEWS = [
    ("reshape", lambda t: t.reshape(4, -1) * 1.0),
    ("reshape_tuple", lambda t: t.reshape((2, 12))),
    ("view", lambda t: t.view(-1)),
    ("view_as", lambda t: t.view_as(t.reshape(6, 4))),
    ("transpose", lambda t: t.transpose(0, 2)),
    ("transpose_neg", lambda t: t.transpose(-1, -2)),
    ("permute", lambda t: t.permute(2, 0, 1)),
    ("permute_tuple", lambda t: t.permute((1, -1, 0))),
    ("T", lambda t: t.reshape(6, 4).T),
    ("mT", lambda t: t.mT),
    ("expand", lambda t: t[:, :1, :].expand(2, 5, 4)),
    ("expand_new_dims", lambda t: t[:, :1, :].expand(3, -1, 7, -1)),
    ("expand_as", lambda t: t[:1].expand_as(t)),
    ("squeeze_all", lambda t: t[:, :1, None, :].squeeze()),
    ("squeeze_dim", lambda t: t[:, :1, None, :].squeeze(1)),
    ("squeeze_non1", lambda t: t.squeeze(0)),
    ("squeeze_tuple", lambda t: t[:, :1, None, :].squeeze((1, 2))),
    ("unsqueeze", lambda t: t.unsqueeze(1)),
    ("unsqueeze_end", lambda t: t.unsqueeze(-1)),
    ("unsqueeze_front", lambda t: t.unsqueeze(-4)),
    ("flatten", lambda t: t.flatten()),
    ("flatten_1", lambda t: t.flatten(1)),
    ("flatten_0_1", lambda t: t.flatten(0, 1)),
    ("flatten_neg", lambda t: t.flatten(-2, -1)),
    ("unflatten", lambda t: t.unflatten(2, (2, 2))),
    ("unflatten_neg1", lambda t: t.unflatten(1, (-1, 1))),
]


@pytest.mark.parametrize("name,f", VIEWS, ids=[v[0] for v in VIEWS])
def test_views(name, f):
    check_op(f, f, [randn(2, 3, 4, seed=1)])


def test_top_level_shape_functions():
    x = randn(2, 3, 4)
    check_op(lambda t: hg.reshape(t, (4, 6)), lambda t: torch.reshape(t, (4, 6)), [x])
    check_op(lambda t: hg.transpose(t, 0, 1), lambda t: torch.transpose(t, 0, 1), [x])
    check_op(lambda t: hg.permute(t, (2, 1, 0)), lambda t: torch.permute(t, (2, 1, 0)), [x])
    check_op(lambda t: hg.squeeze(hg.unsqueeze(t, 0)), lambda t: torch.squeeze(torch.unsqueeze(t, 0)), [x])
    check_op(lambda t: hg.flatten(t, 1), lambda t: torch.flatten(t, 1), [x])
    check_op(lambda t: hg.unflatten(t, 1, (3, 1)), lambda t: torch.unflatten(t, 1, (3, 1)), [x])
    check_op(lambda t: hg.expand(t[:1], 3, 3, 4), lambda t: t[:1].expand(3, 3, 4), [x])


def test_flatten_of_scalar_and_views_of_scalar():
    check_op(lambda t: t.flatten(), lambda t: t.flatten(), [np.array(2.5)])
    check_op(lambda t: t.unsqueeze(0), lambda t: t.unsqueeze(0), [np.array(2.5)])
    check_op(lambda t: t.reshape(1, 1), lambda t: t.reshape(1, 1), [np.array(2.5)])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(dim):
    shapes = [(2, 3, 4), (2, 3, 4)]
    shapes = [tuple(s + k if i == dim % 3 else s for i, s in enumerate(sh)) for k, sh in enumerate(shapes)]
    arrays = [randn(*s, seed=i) for i, s in enumerate(shapes + [shapes[0]])]
    check_op(lambda *ts: hg.cat(ts, dim), lambda *ts: torch.cat(ts, dim), arrays)
    check_op(lambda *ts: hg.cat(list(ts), dim=dim), lambda *ts: torch.cat(list(ts), dim=dim), arrays,
             grad=[True, False, True])
    check_op(lambda *ts: hg.concat(ts, dim), lambda *ts: torch.concat(ts, dim), arrays[:2])


def test_cat_uses_one_input_twice():
    check_op(lambda a, b: hg.cat([a, b, a], 1), lambda a, b: torch.cat([a, b, a], 1), [randn(2, 3), randn(2, 1)])


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    arrays = [randn(2, 3, seed=i) for i in range(3)]
    check_op(lambda *ts: hg.stack(ts, dim), lambda *ts: torch.stack(ts, dim), arrays)


@pytest.mark.parametrize("spec", [2, 3, 5, [1, 4], [2, 0, 3]])
@pytest.mark.parametrize("dim", [0, 1])
def test_split(spec, dim):
    x = randn(5, 5, seed=2)
    check_op(lambda t: hg.split(t, spec, dim), lambda t: torch.split(t, spec, dim), [x])
    check_op(lambda t: t.split(spec, dim=dim), lambda t: t.split(spec, dim=dim), [x])


def test_split_gradient_only_through_some_pieces():
    """Pieces that do not reach the loss count as zero gradient."""
    x = randn(6, 2)
    check_op(lambda t: hg.split(t, 2)[1] * 3.0, lambda t: torch.split(t, 2)[1] * 3.0, [x])
    check_op(lambda t: t.split(4)[0].sum() + t.split(4)[1].sum() * 2.0,
             lambda t: t.split(4)[0].sum() + t.split(4)[1].sum() * 2.0, [x])


@pytest.mark.parametrize("n,chunks", [(6, 3), (7, 3), (5, 4), (2, 5), (6, 1)])
def test_chunk(n, chunks):
    x = randn(n, 3, seed=3)
    check_op(lambda t: hg.chunk(t, chunks), lambda t: torch.chunk(t, chunks), [x])
    check_op(lambda t: t.T.chunk(chunks, dim=1), lambda t: t.T.chunk(chunks, dim=1), [x])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_unbind(dim):
    x = randn(3, 2, 4, seed=4)
    check_op(lambda t: hg.unbind(t, dim), lambda t: torch.unbind(t, dim), [x])
    check_op(lambda t: t.unbind(dim)[1] * 2.0, lambda t: t.unbind(dim)[1] * 2.0, [x])


PADS = [
    ("constant", (1, 2), (2, 3, 4)),
    ("constant", (1, 0, 2, 1), (2, 3, 4)),
    ("constant", (1, 1, 0, 2, 3, 1), (2, 3, 4)),
    ("constant", (-1, 2, 1, -1), (2, 3, 4)),
    ("reflect", (2, 1), (2, 3, 4)),
    ("reflect", (1, 2, 2, 1), (1, 2, 3, 4)),
    ("reflect", (1, 1, 2, 0, 1, 2), (1, 2, 3, 4, 4)),
    ("reflect", (3, 3), (3, 4)),
    ("replicate", (2, 3), (2, 3, 4)),
    ("replicate", (1, 2, 3, 1), (2, 3, 3, 4)),
    ("replicate", (1, 0, 2, 1, 1, 1), (2, 2, 3, 4)),
    ("circular", (2, 1), (2, 3, 4)),
    ("circular", (1, 2, 3, 0), (1, 2, 3, 4)),
    ("circular", (1, 1, 2, 2, 1, 0), (1, 2, 2, 3, 4)),
]


@pytest.mark.parametrize("mode,pad,shape", PADS)
def test_pad(mode, pad, shape):
    x = randn(*shape, seed=6)
    check_op(lambda t: F.pad(t, pad, mode=mode), lambda t: tF.pad(t, pad, mode=mode), [x])
    check_op(lambda t: hg.pad(t, pad, mode), lambda t: tF.pad(t, pad, mode), [x], gradcheck=False)


def test_pad_constant_value():
    check_op(lambda t: F.pad(t, (1, 1, 2, 0), value=-2.5), lambda t: tF.pad(t, (1, 1, 2, 0), value=-2.5),
             [randn(2, 3)])


def test_shape_errors_name_op_and_shapes():
    x = hg.randn(2, 3)
    with pytest.raises(ValueError, match=r"cat: sizes of tensors must match except in dim 0.*\(2, 3\).*\(2, 4\)"):
        hg.cat([x, hg.randn(2, 4)])
    with pytest.raises(ValueError, match=r"cat: sizes of tensors must match.*\(3,\)"):
        hg.cat([x, hg.randn(3)], 1)
    with pytest.raises(ValueError, match="cat: expected a non-empty list"):
        hg.cat([])
    with pytest.raises(TypeError, match="cat: expected a list or tuple"):
        hg.cat(x)
    with pytest.raises(TypeError, match="cat: tensor 1 has dtype float64"):
        hg.cat([x, hg.randn(2, 3, dtype="float64")])
    with pytest.raises(IndexError, match="cat: dim 2 is out of range"):
        hg.cat([x, x], 2)
    with pytest.raises(ValueError, match=r"stack: expects each tensor to be equal size.*\(2, 3\).*\(3, 2\)"):
        hg.stack([x, hg.randn(3, 2)])
    with pytest.raises(IndexError, match="stack: dim 3"):
        hg.stack([x, x], 3)
    with pytest.raises(ValueError, match=r"split: split_sizes \[1, 1\] must .* sum to 3, the size of dim 1"):
        x.split([1, 1], 1)
    with pytest.raises(ValueError, match="split: split_size must be positive"):
        x.split(0)
    with pytest.raises(ValueError, match="chunk: chunks must be a positive int"):
        x.chunk(0)
    with pytest.raises(ValueError, match=r"expand: the size of input \(2, 3\) at dim 1 \(3\) must match"):
        x.expand(2, 4)
    with pytest.raises(ValueError, match="expand: the number of sizes"):
        x.expand(3)
    with pytest.raises(IndexError, match="unsqueeze: dim 3 is out of range"):
        x.unsqueeze(3)
    with pytest.raises(IndexError, match="squeeze: dim 2"):
        x.squeeze(2)
    with pytest.raises(ValueError, match="flatten: start_dim 1 comes after end_dim 0"):
        x.flatten(1, 0)
    with pytest.raises(IndexError, match="transpose: dim 2"):
        x.transpose(0, 2)
    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        x.reshape(4, -1)
    with pytest.raises(ValueError, match="unbind: cannot unbind a 0-d"):
        hg.unbind(hg.tensor(1.0))


def test_pad_errors():
    x = hg.randn(1, 2, 3)
    with pytest.raises(ValueError, match="pad: padding length must be divisible by 2"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match=r"pad: padding length 8 pads 4 dims but the input \(1, 2, 3\)"):
        F.pad(x, (1,) * 8)
    with pytest.raises(ValueError, match="pad: reflect padding .* must be less than"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="pad: circular padding .* must be at most"):
        F.pad(x, (4, 0), mode="circular")
    with pytest.raises(ValueError, match="pad: mode must be"):
        F.pad(x, (1, 1), mode="wrap")
    with pytest.raises(ValueError, match="doesn't take in value"):
        F.pad(x, (1, 1), mode="reflect", value=1.0)
    with pytest.raises(ValueError, match=r"pad: reflect padding of 2 dims needs a 3-D or 4-D input"):
        F.pad(hg.randn(3, 4), (1, 1, 1, 1), mode="reflect")
    with pytest.raises(ValueError, match="only supported in constant mode"):
        F.pad(x, (-1, 1), mode="replicate")
    with pytest.raises(ValueError, match="negative size"):
        F.pad(x, (-2, -2))
