"""Functions that make new leaf tensors: ``tensor``, ``zeros``, ``ones``, ``randn``, ``arange``, ...

Same names, arguments and defaults as PyTorch's; floats default to ``get_default_dtype()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module, get_default_dtype
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor, _to_array


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (floats default to ``get_default_dtype()``)."""
    arr = _to_array(data, dtype)
    if isinstance(data, Tensor) or get_array_module(arr) is not numpy or arr is data:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    """Wrap ``data`` without copying where possible."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == numpy.dtype(dtype)):
        return data
    return Tensor(_to_array(data, dtype))


def _shape(size: Sequence[Any]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(int(s) for s in size[0])
    return tuple(int(s) for s in size)


def _float(dtype: Any) -> numpy.dtype:
    return get_default_dtype() if dtype is None else numpy.dtype(dtype)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(numpy.zeros(_shape(size), _float(dtype)), requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(numpy.ones(_shape(size), _float(dtype)), requires_grad=requires_grad)


def full(size: Iterable[int], fill_value: float, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(numpy.full(tuple(size), fill_value, _float(dtype)), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype: Any = None) -> Tensor:
    return Tensor(numpy.zeros(t.shape, t.dtype if dtype is None else dtype))


def ones_like(t: Tensor, dtype: Any = None) -> Tensor:
    return Tensor(numpy.ones(t.shape, t.dtype if dtype is None else dtype))


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(float(v).is_integer() and not isinstance(v, float) for v in (start, end, step))
        dtype = numpy.int64 if is_int else get_default_dtype()
    return Tensor(numpy.arange(start, end, step, dtype=dtype))


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    data = get_rng().standard_normal(_shape(size)).astype(_float(dtype), copy=False)
    return Tensor(data, requires_grad=requires_grad)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    data = get_rng().random(_shape(size)).astype(_float(dtype), copy=False)
    return Tensor(data, requires_grad=requires_grad)


def randint(low: int, high: int, size: Sequence[int]) -> Tensor:
    return Tensor(get_rng().integers(low, high, size=tuple(size), dtype=numpy.int64))


def empty(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Uninitialised (in practice: zero-filled, so results stay reproducible) tensor of ``size``."""
    return Tensor(numpy.zeros(_shape(size), _float(dtype)), requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: float, dtype: Any = None) -> Tensor:
    return Tensor(numpy.full(t.shape, fill_value, t.dtype if dtype is None else dtype))


def randn_like(t: Tensor, dtype: Any = None) -> Tensor:
    return randn(*t.shape, dtype=t.dtype if dtype is None else dtype)


def rand_like(t: Tensor, dtype: Any = None) -> Tensor:
    return rand(*t.shape, dtype=t.dtype if dtype is None else dtype)


def eye(n: int, m: int | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """The n x m identity matrix (m = n by default)."""
    return Tensor(numpy.eye(n, m, dtype=_float(dtype)), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    return Tensor(numpy.linspace(start, end, int(steps), dtype=_float(dtype)))


def from_numpy(a: numpy.ndarray) -> Tensor:
    """A tensor sharing memory with the NumPy array ``a`` (its dtype kept as is)."""
    if not isinstance(a, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    return Tensor._from_op(a, None, 0)


def randperm(n: int, dtype: Any = numpy.int64) -> Tensor:
    """A random permutation of 0..n-1 from handgrad's seeded generator."""
    return Tensor(get_rng().permutation(int(n)).astype(dtype))
