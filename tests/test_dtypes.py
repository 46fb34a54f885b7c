"""Dtype objects with PyTorch's names and meanings, accepted by factories, ``.to``, ``.type()`` and the
conversion methods; half precision refused in one clear line."""

from __future__ import annotations

import numpy
import pytest

import handgrad as hg

torch = pytest.importorskip("torch")

PAIRS = [("float32", "float32"), ("float64", "float64"), ("int64", "int64"), ("int32", "int32"),
         ("bool", "bool"), ("float", "float32"), ("double", "float64"), ("long", "int64"), ("int", "int32")]


@pytest.mark.parametrize(("name", "numpy_name"), PAIRS)
def test_dtype_objects_mean_what_torch_means(name: str, numpy_name: str) -> None:
    d = getattr(hg, name)
    assert d == numpy.dtype(numpy_name)
    assert str(getattr(torch, name)).removeprefix("torch.") == numpy_name  # the same meaning as PyTorch's
    assert hg.zeros(2, dtype=d).dtype == d
    assert hg.tensor([1, 0], dtype=d).dtype == d
    assert hg.ones(2).to(d).dtype == d
    assert hg.ones(2).type(d).dtype == d
    assert hg.full((2,), 1, dtype=d).dtype == d
    assert hg.zeros_like(hg.ones(2), dtype=d).dtype == d
    assert hg.tensor([1.0]).to(name).dtype == d  # names as strings too
    assert hg.tensor([1.0]).to(f"torch.{name}").dtype == d


def test_python_types_mean_what_torch_means() -> None:
    assert hg.tensor([1], dtype=float).dtype == hg.float64 == torch.tensor([1], dtype=float).numpy().dtype
    assert hg.tensor([1.7], dtype=int).dtype == hg.int64
    assert hg.tensor([1], dtype=bool).dtype == hg.bool


def test_conversion_methods_and_type_names() -> None:
    t = hg.tensor([1.5, -2.5, 0.0])
    tt = torch.tensor([1.5, -2.5, 0.0])
    for m in ("float", "double", "long", "int", "bool"):
        got, want = getattr(t, m)(), getattr(tt, m)()
        assert str(got.dtype) == str(want.dtype).removeprefix("torch.")
        numpy.testing.assert_array_equal(got.numpy(), want.numpy())
    assert t.type() == "handgrad.FloatTensor" and t.double().type() == "handgrad.DoubleTensor"
    assert t.long().type() == "handgrad.LongTensor" and t.bool().type() == "handgrad.BoolTensor"
    assert t.type("torch.LongTensor").dtype == hg.int64
    assert t.type("handgrad.DoubleTensor").dtype == hg.float64


def test_float_conversion_keeps_the_gradient() -> None:
    x = hg.tensor([1.0, 2.0], dtype=hg.float32, requires_grad=True)
    (x.double() * 3).sum().backward()
    assert x.grad.dtype == hg.float32 and x.grad.tolist() == [3.0, 3.0]


def test_half_is_refused_in_one_line() -> None:
    assert hg.half == hg.float16
    for make in (lambda: hg.zeros(2, dtype=hg.half), lambda: hg.ones(2).half(), lambda: hg.ones(2).to(hg.float16),
                 lambda: hg.tensor([1.0], dtype="half")):
        with pytest.raises(TypeError, match=r"float16 \(half\) is not supported") as e:
            make()
        assert "\n" not in str(e.value)


def test_unknown_dtype_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="unknown dtype 'floot32'"):
        hg.zeros(2, dtype="floot32")


def test_random_integer_factories_take_dtypes() -> None:
    assert hg.randint(0, 5, (3,), dtype=hg.int).dtype == hg.int32
    assert hg.randint(5, (2, 2)).shape == (2, 2) and hg.randint(5, (2, 2)).dtype == hg.int64  # randint(high, size)
    assert hg.randperm(4, dtype="long").dtype == hg.int64 and sorted(hg.randperm(4).tolist()) == [0, 1, 2, 3]
    assert hg.arange(3, dtype=hg.double).dtype == hg.float64 and hg.eye(2, dtype="double").dtype == hg.float64
