"""PyTorch's everyday ``Tensor`` methods that are thin wrappers (comparisons, dtype conversions, ``new_*``),
kept apart from ``tensor.py`` (the core: data, graph, arithmetic operators) as the base class
``TensorMethods`` of ``Tensor``.

The ops live in ``handgrad.engine.ops``; these methods reach them through ``tensor.py``'s module (imported
here as a module object, which Python allows while ``tensor.py`` is still loading: the names are only looked
up when a method runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import handgrad.engine as _engine_package
from handgrad.engine import dtypes as _dtypes
from handgrad.engine import tensor as _tensor_module

if TYPE_CHECKING:
    from handgrad.engine.tensor import Tensor


def _ops() -> Any:
    return _tensor_module._ops


class TensorMethods:
    """Comparison operators and methods of ``Tensor`` (no state: ``Tensor`` holds the slots)."""

    __slots__ = ()

    # Identity hashing, so tensors can be dict keys and set members while ``==`` is elementwise (PyTorch's
    # choice too): a dict compares stored hashes first, so ``==`` never runs between distinct tensors there.
    __hash__ = object.__hash__

    # -- reductions ---------------------------------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops().sum(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops().mean(self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        return _ops().max(self, dim, keepdim)

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        return _ops().min(self, dim, keepdim)

    def amax(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return _ops().amax(self, dim, keepdim)

    def amin(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return _ops().amin(self, dim, keepdim)

    def argmax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops().argmax(self, dim, keepdim)

    def argmin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops().argmin(self, dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        return _ops().var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        return _ops().std(self, dim, unbiased, keepdim, correction=correction)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return _ops().logsumexp(self, dim, keepdim)

    def prod(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _ops().prod(self, dim, keepdim)

    # -- dtype conversions (differentiable into floating dtypes, via ``Tensor.to``) -------------------------
    def float(self) -> Tensor:
        return self.to(_dtypes.float32)  # type: ignore[attr-defined]

    def double(self) -> Tensor:
        return self.to(_dtypes.float64)  # type: ignore[attr-defined]

    def half(self) -> Tensor:
        return self.to(_dtypes.float16)  # type: ignore[attr-defined]  # refused with to_dtype's clear error

    def long(self) -> Tensor:
        return self.to(_dtypes.int64)  # type: ignore[attr-defined]

    def int(self) -> Tensor:
        return self.to(_dtypes.int32)  # type: ignore[attr-defined]

    def bool(self) -> Tensor:
        return self.to(_dtypes.bool)  # type: ignore[attr-defined]

    def type(self, dtype: Any = None) -> Any:
        """Without ``dtype``: the legacy type name, e.g. ``'handgrad.FloatTensor'``. With one (a dtype or such a
        name, ``'torch.LongTensor'`` included): this tensor cast to it, as ``.to(dtype)``."""
        if dtype is None:
            return "handgrad." + _dtypes.TYPE_NAMES.get(self.dtype, f"{self.dtype}Tensor")  # type: ignore
        return self.to(_dtypes.to_dtype(dtype, "Tensor.type"))  # type: ignore[attr-defined]

    # -- comparisons: elementwise bool tensors, outside the graph ------------------------------------------
    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        if other is None or isinstance(other, str):
            return NotImplemented  # Python then says False, as PyTorch's ``t == None``
        return _ops().eq(self, other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        if other is None or isinstance(other, str):
            return NotImplemented
        return _ops().ne(self, other)

    def __floordiv__(self, other: Any) -> Tensor:
        return _ops().div(self, other, rounding_mode="floor")

    def __rfloordiv__(self, other: Any) -> Tensor:
        return _ops().div(other, self, rounding_mode="floor")

    def __lt__(self, other: Any) -> Tensor:
        return _ops().lt(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _ops().le(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _ops().gt(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _ops().ge(self, other)

    def eq(self, other: Any) -> Tensor:
        return _ops().eq(self, other)

    def ne(self, other: Any) -> Tensor:
        return _ops().ne(self, other)

    def lt(self, other: Any) -> Tensor:
        return _ops().lt(self, other)

    def le(self, other: Any) -> Tensor:
        return _ops().le(self, other)

    def gt(self, other: Any) -> Tensor:
        return _ops().gt(self, other)

    def ge(self, other: Any) -> Tensor:
        return _ops().ge(self, other)

    def equal(self, other: Tensor) -> bool:
        return _ops().equal(self, other)

    def isnan(self) -> Tensor:
        return _ops().isnan(self)

    def isfinite(self) -> Tensor:
        return _ops().isfinite(self)

    def isinf(self) -> Tensor:
        return _ops().isinf(self)

    def isclose(self, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Tensor:
        return _ops().isclose(self, other, rtol, atol, equal_nan)

    def allclose(self, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
        return _ops().allclose(self, other, rtol, atol, equal_nan)

    # -- logical operators on bool (and integer) tensors -----------------------------------------------------
    def _logical(self, other: Any, ufunc: str) -> Tensor:
        xp = _tensor_module.get_array_module(self.array)  # type: ignore[attr-defined]
        rhs = other.array if isinstance(other, _tensor_module.Tensor) else other
        return _tensor_module.Tensor._from_op(getattr(xp, ufunc)(self.array, rhs), None, 0)  # type: ignore

    def __invert__(self) -> Tensor:
        xp = _tensor_module.get_array_module(self.array)  # type: ignore[attr-defined]
        return _tensor_module.Tensor._from_op(xp.invert(self.array), None, 0)  # type: ignore[attr-defined]

    def __and__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_and")

    def __or__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_or")

    def __xor__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_xor")

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def logical_not(self) -> Tensor:
        xp = _tensor_module.get_array_module(self.array)  # type: ignore[attr-defined]
        return _tensor_module.Tensor._from_op(xp.logical_not(self.array), None, 0)  # type: ignore[attr-defined]

    def logical_and(self, other: Any) -> Tensor:
        return self._logical(other, "logical_and")

    def logical_or(self, other: Any) -> Tensor:
        return self._logical(other, "logical_or")

    def any(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _tensor_module.Tensor._from_op(  # type: ignore[attr-defined]
            _tensor_module.get_array_module(self.array).asarray(self.array.any(axis=dim, keepdims=keepdim)),
            None, 0)

    def all(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _tensor_module.Tensor._from_op(  # type: ignore[attr-defined]
            _tensor_module.get_array_module(self.array).asarray(self.array.all(axis=dim, keepdims=keepdim)),
            None, 0)

    # -- layout ---------------------------------------------------------------------------------------------
    def t(self) -> Tensor:
        """The transpose of a matrix (a 0-D or 1-D tensor is returned as is), as ``torch.Tensor.t``."""
        if self.ndim > 2:  # type: ignore[attr-defined]
            raise ValueError(f"t: expects a tensor with <= 2 dims, got shape {self.shape}; use transpose or mT")  # type: ignore[attr-defined]  # noqa: E501
        return self if self.ndim < 2 else _ops().transpose(self, 0, 1)  # type: ignore[attr-defined]

    def is_contiguous(self) -> bool:
        return bool(self.array.flags.c_contiguous)  # type: ignore[attr-defined]

    def contiguous(self) -> Tensor:
        """``self`` when its data is C-contiguous, else a contiguous copy (differentiable)."""
        return self if self.is_contiguous() else _ops().clone(self)  # type: ignore[return-value]

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        """Elements ``start .. start + length - 1`` along ``dim`` (a view of the same data, as in PyTorch)."""
        d = _ops().shape.norm_dim("narrow", dim, self.ndim)  # type: ignore[attr-defined]
        n = self.shape[d]  # type: ignore[attr-defined]
        start = start + n if start < 0 else start
        if not (0 <= start <= n and 0 <= length and start + length <= n):
            raise IndexError(f"narrow: start {start} + length {length} is out of range for dim {dim} of size {n}")
        return _ops().getitem(self, (slice(None),) * d + (slice(start, start + length),))

    def select(self, dim: int, index: int) -> Tensor:
        """The slice at ``index`` along ``dim``, that dim removed (a view of the same data, as in PyTorch)."""
        d = _ops().shape.norm_dim("select", dim, self.ndim)  # type: ignore[attr-defined]
        n = self.shape[d]  # type: ignore[attr-defined]
        if not -n <= index < n:
            raise IndexError(f"select: index {index} is out of range for dim {dim} of size {n} (shape "
                             f"{self.shape})")  # type: ignore[attr-defined]
        return _ops().getitem(self, (slice(None),) * d + (int(index),))

    # -- new_* factories: the same dtype and device as self unless told -----------------------------------------
    def _new(self, make: Any, size: Any, dtype: Any, device: Any, requires_grad: bool, *args: Any) -> Tensor:
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
        return make(shape, *args, dtype=self.dtype if dtype is None else dtype,  # type: ignore[attr-defined]
                    device=self.device if device is None else device,  # type: ignore[attr-defined]
                    requires_grad=requires_grad)

    def new_zeros(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        return self._new(_factories().zeros, size, dtype, device, requires_grad)

    def new_ones(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        return self._new(_factories().ones, size, dtype, device, requires_grad)

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        return self._new(_factories().zeros, size, dtype, device, requires_grad)

    def new_full(self, size: Any, fill_value: Any, *, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> Tensor:
        f = _factories()
        return f.full(tuple(size), fill_value, dtype=self.dtype if dtype is None else dtype,  # type: ignore
                      device=self.device if device is None else device, requires_grad=requires_grad)  # type: ignore

    def new_tensor(self, data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        """A new leaf holding a copy of ``data``, in self's dtype and device unless told."""
        return _factories().tensor(data, dtype=self.dtype if dtype is None else dtype,  # type: ignore
                                   device=self.device if device is None else device,  # type: ignore
                                   requires_grad=requires_grad)

    # -- products, scans, sorting, rearranging (ops in engine/ops) --------------------------------------------
    def mm(self, mat2: Tensor) -> Tensor:
        return _ops().mm(self, mat2)

    def bmm(self, mat2: Tensor) -> Tensor:
        return _ops().bmm(self, mat2)

    def cumsum(self, dim: int, dtype: Any = None) -> Tensor:
        return _ops().cumsum(self, dim, dtype)

    def cumprod(self, dim: int, dtype: Any = None) -> Tensor:
        return _ops().cumprod(self, dim, dtype)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        return _ops().sort(self, dim, descending, stable)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        return _ops().argsort(self, dim, descending, stable)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
        return _ops().topk(self, k, dim, largest, sorted)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _ops().tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _ops().triu(self, diagonal)

    def flip(self, *dims: Any) -> Tensor:
        return _ops().flip(self, dims[0] if len(dims) == 1 else dims)

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        return _ops().roll(self, shifts, dims)

    def repeat(self, *sizes: Any) -> Tensor:
        return _ops().repeat(self, *sizes)

    def repeat_interleave(self, repeats: Any, dim: int | None = None) -> Tensor:
        return _ops().repeat_interleave(self, repeats, dim)

    def norm(self, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        return _ops().norm(self, p, dim, keepdim, dtype)

    def multinomial(self, num_samples: int, replacement: bool = False) -> Tensor:
        return _ops().multinomial(self, num_samples, replacement)

    def __format__(self, spec: str) -> str:
        """``format(t, '.3f')`` / f-strings format a one-element tensor's value (others only with an empty
        spec: their repr), as PyTorch."""
        if self.array.size == 1 and spec:  # type: ignore[attr-defined]
            return format(self.array.item(), spec)  # type: ignore[attr-defined]
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {self.shape}: only "  # type: ignore[attr-defined]  # noqa: E501
                            "one-element tensors take a format spec")
        return repr(self)


def _factories() -> Any:
    # handgrad/__init__ has imported engine.factories before any tensor method can run (it imports Tensor)
    return _engine_package.factories
