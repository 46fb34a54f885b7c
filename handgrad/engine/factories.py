"""Functions that make new leaf tensors: ``tensor``, ``zeros``, ``ones``, ``randn``, ``arange``, ...

Same names, arguments and defaults as PyTorch's; floats default to ``get_default_dtype()``. Every factory
takes ``device=`` (``"cpu"`` by default, ``*_like`` default to their model's device) and builds the array
there directly; random ones draw from that device's generator (``get_rng(device)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy

from handgrad.engine.backend import DeviceLike, device_of_array, get_default_dtype, get_device
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor, _to_array


def tensor(data: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (floats default to ``get_default_dtype()``), on ``device``
    (default: where ``data`` is, the CPU for Python and NumPy data)."""
    arr = _to_array(data, dtype)
    if device is not None and get_device(device) != device_of_array(arr):
        arr = get_device(device).send(arr)  # a transfer is a copy
    elif isinstance(data, Tensor) or type(arr) is not numpy.ndarray or arr is data:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    """Wrap ``data`` without copying where possible (a copy when it must move to ``device``)."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == numpy.dtype(dtype)):
        return data if device is None else data.to(device)
    arr = _to_array(data, dtype)
    if device is not None:
        arr = get_device(device).send(arr)
    return Tensor(arr)


def _shape(size: Sequence[Any]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(int(s) for s in size[0])
    return tuple(int(s) for s in size)


def _float(dtype: Any) -> numpy.dtype:
    return get_default_dtype() if dtype is None else to_dtype(dtype, "dtype")


def _xp(device: DeviceLike) -> Any:
    return get_device(device).xp


def zeros(*size: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    return Tensor(_xp(device).zeros(_shape(size), _float(dtype)), requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    return Tensor(_xp(device).ones(_shape(size), _float(dtype)), requires_grad=requires_grad)


def full(size: Iterable[int], fill_value: float, dtype: Any = None, device: DeviceLike = None,
         requires_grad: bool = False) -> Tensor:
    return Tensor(_xp(device).full(tuple(size), fill_value, _float(dtype)), requires_grad=requires_grad)


def empty(*size: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Uninitialised (in practice: zero-filled, so results stay reproducible) tensor of ``size``."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(t: Tensor, dtype: Any, device: DeviceLike) -> tuple[Any, Any]:
    dev = device_of_array(t.array) if device is None else get_device(device)
    return dev, (t.dtype if dtype is None else to_dtype(dtype, "dtype"))


def zeros_like(t: Tensor, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    dev, dt = _like(t, dtype, device)
    return Tensor(dev.xp.zeros(t.shape, dt))


def ones_like(t: Tensor, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    dev, dt = _like(t, dtype, device)
    return Tensor(dev.xp.ones(t.shape, dt))


def full_like(t: Tensor, fill_value: float, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    dev, dt = _like(t, dtype, device)
    return Tensor(dev.xp.full(t.shape, fill_value, dt))


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None,
           device: DeviceLike = None) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(float(v).is_integer() and not isinstance(v, float) for v in (start, end, step))
        dtype = numpy.int64 if is_int else get_default_dtype()
    return Tensor(_xp(device).arange(start, end, step, dtype=to_dtype(dtype, "arange")))


def eye(n: int, m: int | None = None, dtype: Any = None, device: DeviceLike = None,
        requires_grad: bool = False) -> Tensor:
    """The n x m identity matrix (m = n by default)."""
    return Tensor(_xp(device).eye(n, m, dtype=_float(dtype)), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    return Tensor(_xp(device).linspace(start, end, int(steps), dtype=_float(dtype)))


def randn(*size: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Standard normal draws from ``device``'s generator."""
    data = get_rng(device).standard_normal(_shape(size)).astype(_float(dtype), copy=False)
    return Tensor(data, requires_grad=requires_grad)


def rand(*size: Any, dtype: Any = None, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) draws from ``device``'s generator."""
    data = get_rng(device).random(_shape(size)).astype(_float(dtype), copy=False)
    return Tensor(data, requires_grad=requires_grad)


def randint(low: int, high: Any = None, size: Sequence[int] | None = None, device: DeviceLike = None, *,
            dtype: Any = None) -> Tensor:
    """Integers uniform in [low, high) of shape ``size`` (``randint(high, size)`` as in PyTorch), int64 unless
    ``dtype`` says otherwise."""
    if size is None:
        if high is None:
            raise TypeError("randint: expected randint(low, high, size) or randint(high, size)")
        low, high, size = 0, low, high
    dt = numpy.int64 if dtype is None else to_dtype(dtype, "randint")
    return Tensor(get_rng(device).integers(low, high, size=tuple(size), dtype=numpy.int64).astype(dt, copy=False))


def randn_like(t: Tensor, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    dev, dt = _like(t, dtype, device)
    return randn(*t.shape, dtype=dt, device=dev)


def rand_like(t: Tensor, dtype: Any = None, device: DeviceLike = None) -> Tensor:
    dev, dt = _like(t, dtype, device)
    return rand(*t.shape, dtype=dt, device=dev)


def randperm(n: int, dtype: Any = numpy.int64, device: DeviceLike = None) -> Tensor:
    """A random permutation of 0..n-1 from ``device``'s seeded generator."""
    return Tensor(get_rng(device).permutation(int(n)).astype(to_dtype(dtype, "randperm")))


def from_numpy(a: numpy.ndarray) -> Tensor:
    """A tensor sharing memory with the NumPy array ``a`` (its dtype kept as is)."""
    if not isinstance(a, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    return Tensor._from_op(a, None, 0)
