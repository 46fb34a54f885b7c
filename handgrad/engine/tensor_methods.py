"""PyTorch's everyday ``Tensor`` methods that are thin wrappers (comparisons, dtype conversions, ``new_*``),
kept apart from ``tensor.py`` (the core: data, graph, arithmetic operators) as the base class
``TensorMethods`` of ``Tensor``.

The ops live in ``handgrad.engine.ops``; these methods reach them through ``tensor.py``'s module (imported
here as a module object, which Python allows while ``tensor.py`` is still loading: the names are only looked
up when a method runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        xp = _tensor_module.get_array_module(self.data)  # type: ignore[attr-defined]
        rhs = other.data if isinstance(other, _tensor_module.Tensor) else other
        return _tensor_module.Tensor._from_op(getattr(xp, ufunc)(self.data, rhs), None, 0)  # type: ignore

    def __invert__(self) -> Tensor:
        xp = _tensor_module.get_array_module(self.data)  # type: ignore[attr-defined]
        return _tensor_module.Tensor._from_op(xp.invert(self.data), None, 0)  # type: ignore[attr-defined]

    def __and__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_and")

    def __or__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_or")

    def __xor__(self, other: Any) -> Tensor:
        return self._logical(other, "bitwise_xor")

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def logical_not(self) -> Tensor:
        xp = _tensor_module.get_array_module(self.data)  # type: ignore[attr-defined]
        return _tensor_module.Tensor._from_op(xp.logical_not(self.data), None, 0)  # type: ignore[attr-defined]

    def logical_and(self, other: Any) -> Tensor:
        return self._logical(other, "logical_and")

    def logical_or(self, other: Any) -> Tensor:
        return self._logical(other, "logical_or")

    def any(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _tensor_module.Tensor._from_op(  # type: ignore[attr-defined]
            _tensor_module.get_array_module(self.data).asarray(self.data.any(axis=dim, keepdims=keepdim)),
            None, 0)

    def all(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _tensor_module.Tensor._from_op(  # type: ignore[attr-defined]
            _tensor_module.get_array_module(self.data).asarray(self.data.all(axis=dim, keepdims=keepdim)),
            None, 0)
