"""``div``/``div_`` with ``rounding_mode='trunc'|'floor'`` and ``//`` (issue 10), against PyTorch: values
(floats, integers, negative operands, signed zeros, division by zero), dtypes, the zero gradient PyTorch
gives (a node, not a missing one), in place, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

A = np.array([7.5, -7.5, 3.0, -3.0, 0.5, -0.5, 1e4, -1e4, 0.0, 5.0])
B = np.array([2.0, 2.0, -2.0, -2.0, 2.0, 2.0, 3.0, -7.0, 3.0, -2.0])


def _same(h, t) -> None:
    h, t = np.asarray(h.detach().numpy()), t.detach().numpy()
    assert h.dtype == t.dtype and h.shape == t.shape
    np.testing.assert_array_equal(h, t)
    np.testing.assert_array_equal(np.signbit(h), np.signbit(t))  # -0.0 where PyTorch has it


@pytest.mark.parametrize("mode", ["trunc", "floor"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_float_values_like_torch(mode: str, dtype: str) -> None:
    a, b = A.astype(dtype), B.astype(dtype)
    _same(hg.div(hg.tensor(a), hg.tensor(b), rounding_mode=mode),
          torch.div(torch.tensor(a), torch.tensor(b), rounding_mode=mode))
    _same(hg.tensor(a).div(2.0, rounding_mode=mode), torch.tensor(a).div(2.0, rounding_mode=mode))
    _same(hg.div(-7.0, hg.tensor(b), rounding_mode=mode), torch.div(-7.0, torch.tensor(b), rounding_mode=mode))
    with np.errstate(all="ignore"):  # division by zero: +-inf and NaN, as PyTorch
        z = np.array([1.0, -1.0, 0.0], dtype=dtype)
        _same(hg.div(hg.tensor(z), 0.0, rounding_mode=mode), torch.div(torch.tensor(z), 0.0, rounding_mode=mode))


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_integer_values_like_torch(mode: str) -> None:
    a = np.array([7, -7, 6, -6, 0, 1, -1, 13])
    b = np.array([2, 2, -4, 4, 5, -3, 3, -5])
    _same(hg.div(hg.tensor(a), hg.tensor(b), rounding_mode=mode),
          torch.div(torch.tensor(a), torch.tensor(b), rounding_mode=mode))
    _same(hg.tensor(a).div(3, rounding_mode=mode), torch.tensor(a).div(3, rounding_mode=mode))
    for lib in (hg, torch):
        with pytest.raises((ZeroDivisionError, RuntimeError), match="ZeroDivisionError|division by zero"):
            lib.div(lib.tensor([1, 2]), lib.tensor([1, 0]), rounding_mode=mode)


def test_floordiv_operator_like_torch() -> None:
    _same(hg.tensor(A) // hg.tensor(B), torch.tensor(A) // torch.tensor(B))
    _same(hg.tensor([7, -7]) // 2, torch.tensor([7, -7]) // 2)
    _same(10.0 // hg.tensor(B), 10.0 // torch.tensor(B))


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_gradient_is_zero_like_torch(mode: str) -> None:
    grads = []
    for lib in (hg, torch):
        a = lib.tensor(A, requires_grad=True)
        b = lib.tensor(B[:1], requires_grad=True)  # broadcast
        y = lib.div(a * 3, b, rounding_mode=mode)
        assert y.requires_grad and y.grad_fn is not None
        (y * a).sum().backward()  # only the product rule's other term survives: d/da = y
        grads.append((a.grad.numpy().copy(), b.grad.numpy().copy()))
    for h, t in zip(*grads):
        np.testing.assert_array_equal(h, t)
    np.testing.assert_array_equal(grads[0][1], [0.0])


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_div_inplace_like_torch(mode: str) -> None:
    res = []
    for lib in (hg, torch):
        f = lib.tensor(A.copy())
        f.div_(2.0, rounding_mode=mode)
        i = lib.tensor(np.array([7, -7, 9]))
        i.div_(2, rounding_mode=mode)
        x = lib.tensor(A, requires_grad=True)
        h = x * 1
        h.div_(lib.tensor(B), rounding_mode=mode)  # in the graph: zero gradient to x through the division
        (h + x).sum().backward()
        g = lib.tensor(np.array([7, -7]))
        g //= 2
        res.append([f, i, h, x.grad, g])
    for h, t in zip(*res):
        _same(h, t)
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        hg.tensor([7, -7]).div_(2)  # true division of an integer tensor in place, as PyTorch


def test_bad_rounding_mode() -> None:
    for lib in (hg, torch):
        with pytest.raises((ValueError, RuntimeError), match="expected rounding_mode to be one of None, 'trunc', or "
                                                            "'floor' but found 'round'"):
            lib.div(lib.tensor([1.0]), 2.0, rounding_mode="round")
