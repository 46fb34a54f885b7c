"""Matrix norms (issue 10): ``linalg.matrix_norm``, ``linalg.norm`` with matrix orders and ``norm(p='nuc')`` /
``Tensor.norm``: forward and backward equal to PyTorch's (float64, through ``check_op``: also gradcheck and the
float32 forward), batched over other dims, keepdim, ties (the subgradient PyTorch picks) and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ops_common import check_op

import handgrad as hg

R = np.random.default_rng(5)
ORDS = ["fro", "nuc", 2, -2, 1, -1, math.inf, -math.inf]


def _mat(*shape: int) -> np.ndarray:
    """Entries away from 0 (|x| is not smooth there) with distinct singular values and row/column sums."""
    x = R.standard_normal(shape)
    return x + np.sign(x) * 0.3


@pytest.mark.parametrize("ord", ORDS)
@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (3, 3)])
def test_matrix_norm_matches_torch(ord, shape) -> None:  # noqa: A002
    check_op(lambda a: hg.linalg.matrix_norm(a, ord), lambda a: torch.linalg.matrix_norm(a, ord), [_mat(*shape)])


@pytest.mark.parametrize("ord", ORDS)
def test_matrix_norm_batched_dims_keepdim(ord) -> None:  # noqa: A002
    x = _mat(2, 3, 4)
    check_op(lambda a: hg.linalg.matrix_norm(a, ord), lambda a: torch.linalg.matrix_norm(a, ord), [x])
    check_op(lambda a: hg.linalg.matrix_norm(a, ord, dim=(2, 0), keepdim=True),
             lambda a: torch.linalg.matrix_norm(a, ord, dim=(2, 0), keepdim=True), [x])
    check_op(lambda a: hg.linalg.norm(a, ord, dim=(0, -1)), lambda a: torch.linalg.norm(a, ord, dim=(0, -1)), [x])


@pytest.mark.parametrize("ord", ORDS)
def test_linalg_norm_of_a_matrix_and_tensor_norm(ord) -> None:  # noqa: A002
    x = _mat(3, 5)
    check_op(lambda a: hg.linalg.norm(a, ord), lambda a: torch.linalg.norm(a, ord), [x])
    check_op(lambda a: hg.linalg.norm(a, ord, keepdim=True), lambda a: torch.linalg.norm(a, ord, keepdim=True), [x])
    if isinstance(ord, str):  # torch.norm: numbers are vector norms of the elements, 'fro' and 'nuc' matrix norms
        check_op(lambda a: hg.norm(a, p=ord), lambda a: torch.norm(a, p=ord), [x])
        check_op(lambda a: a.norm(p=ord), lambda a: a.norm(p=ord), [x])
        check_op(lambda a: a.norm(ord, dim=(1, 2)), lambda a: a.norm(ord, dim=(1, 2)), [_mat(2, 3, 4)])
    else:
        check_op(lambda a: hg.norm(a, p=ord, dim=(0, 1)), lambda a: torch.norm(a, p=ord, dim=(0, 1)), [x])


def _grads(ord, x):  # noqa: A002
    out = []
    for lib in (hg, torch):
        a = lib.tensor(x, requires_grad=True)
        lib.linalg.matrix_norm(a, ord).backward()
        out.append(np.array(a.grad.numpy()))
    return out


@pytest.mark.parametrize("ord", [math.inf, -math.inf, 1, -1])
def test_ties_and_zeros_split_the_gradient_like_torch(ord) -> None:  # noqa: A002
    for x in (np.array([[1.0, -2.0], [-3.0, 0.0]]),  # equal row sums; a zero entry (sign 0)
              np.array([[1.0, 1.0], [1.0, 1.0]]),  # every row and column tied
              np.zeros((2, 3))):
        h, t = _grads(ord, x)
        np.testing.assert_allclose(h, t, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("ord", [2, -2, "nuc"])
def test_repeated_singular_values_like_torch(ord) -> None:  # noqa: A002
    """The identity (every singular value equal): PyTorch splits the 2/-2 gradient evenly among the tied
    singular values, which makes it independent of the (non-unique) singular vectors; 'nuc' gives U V^T."""
    for x in (np.eye(3), 2.0 * np.eye(3)[:, :2], np.diag([3.0, 1.0, 3.0])):
        h, t = _grads(ord, x)
        np.testing.assert_allclose(h, t, rtol=1e-12, atol=1e-14)


def test_float32_and_gradcheck_batched() -> None:
    x = _mat(2, 3, 3)
    for ord in ORDS:
        a = hg.tensor(x, requires_grad=True)
        assert hg.gradcheck(lambda t, o=ord: hg.linalg.matrix_norm(t, o), (a,))
        f = hg.linalg.matrix_norm(hg.tensor(x, dtype=hg.float32), ord)
        assert f.dtype == hg.float32
        np.testing.assert_allclose(f.numpy(), torch.linalg.matrix_norm(torch.tensor(x, dtype=torch.float32), ord),
                                   rtol=1e-5)


def test_empty_and_errors_like_torch() -> None:
    e = hg.zeros(0, 3, dtype=hg.float64)
    for ord in ("fro", "nuc", 2):
        assert float(hg.linalg.matrix_norm(e, ord)) == float(torch.linalg.matrix_norm(torch.zeros(0, 3), ord)) == 0
    with pytest.raises(ValueError, match="Order 3 not supported"):
        hg.linalg.matrix_norm(hg.ones(2, 3), 3)
    with pytest.raises(ValueError, match="must have at least 2 dimensions"):
        hg.linalg.matrix_norm(hg.ones(3), 1)
    with pytest.raises(ValueError, match="dim must be a 2-tuple"):
        hg.linalg.matrix_norm(hg.ones(2, 3, 4), "nuc", dim=(0, 1, 2))
    with pytest.raises(ValueError, match="If dim is not specified but ord is, the input must be 1D or 2D"):
        hg.linalg.norm(hg.ones(2, 3, 4), 1)
    with pytest.raises(ValueError, match="needs a 2-D input"):
        hg.norm(hg.ones(2, 3, 4), p="nuc")
    with pytest.raises(TypeError, match="floating"):
        hg.linalg.matrix_norm(hg.tensor([[1, 2], [3, 4]]), "nuc")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, 1e-3])
def test_extreme_magnitudes_like_torch(dtype: str, scale: float) -> None:
    """Entries up to +-1e4 (and tiny ones): no overflow or underflow, the values and gradients of PyTorch."""
    x = ((np.random.default_rng(11).standard_normal((3, 4)) + 0.3) * scale).astype(dtype)
    rtol = 2e-5 if dtype == "float32" else 1e-10
    for ord in ORDS:
        h = hg.tensor(x, requires_grad=True)
        t = torch.tensor(x, requires_grad=True)
        hy, ty = hg.linalg.matrix_norm(h, ord), torch.linalg.matrix_norm(t, ord)
        hy.backward()
        ty.backward()
        np.testing.assert_allclose(hy.numpy(), ty.detach().numpy(), rtol=rtol, err_msg=str(ord))
        scale_g = float(np.abs(t.grad.numpy()).max())  # (rounding is relative to the largest entry)
        np.testing.assert_allclose(h.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=rtol * scale_g, err_msg=str(ord))
