"""Element-wise comparisons and tests: ``eq ne lt le gt ge``, ``isnan isfinite isinf``, ``isclose allclose``.

All give boolean tensors (``allclose`` a Python bool) outside the graph: a comparison has no gradient, as in
PyTorch. The operands broadcast; a Python number or nested list compares with every element. ``Tensor``'s
``== != < <= > >=`` are these functions, so ``mask = (y == pad)`` is elementwise as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor


def _operand(op: str, a: Tensor, other: Any) -> Any:
    """The other operand as an array or scalar in ``a``'s array module (a Tensor's data, a number, a list)."""
    if isinstance(other, Tensor):
        return other.array
    if isinstance(other, (bool, int, float, complex)) or hasattr(other, "dtype"):
        return other
    if isinstance(other, (list, tuple)):
        return get_array_module(a.array).asarray(other)
    raise TypeError(f"{op}: cannot compare a Tensor with {type(other).__name__}")


def _compare(op: str, ufunc: str, a: Any, b: Any) -> Tensor:
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError(f"{op}: expected at least one Tensor operand")
        a, b = b, a
        ufunc = _SWAPPED[ufunc]
    xp = get_array_module(a.array)
    rhs = _operand(op, a, b)
    try:
        out = getattr(xp, ufunc)(a.array, rhs)
    except ValueError:
        shape = getattr(rhs, "shape", ())
        raise ValueError(f"{op}: shapes {a.shape} and {tuple(shape)} cannot be broadcast together") from None
    return Tensor._from_op(xp.asarray(out), None, 0)


_SWAPPED = {"equal": "equal", "not_equal": "not_equal", "less": "greater", "less_equal": "greater_equal",
            "greater": "less", "greater_equal": "less_equal"}


def eq(input: Tensor, other: Any) -> Tensor:  # noqa: A002 - torch argument name
    """``input == other`` element-wise (broadcast), a bool tensor."""
    return _compare("eq", "equal", input, other)


def ne(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``input != other`` element-wise, a bool tensor."""
    return _compare("ne", "not_equal", input, other)


def lt(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``input < other`` element-wise, a bool tensor."""
    return _compare("lt", "less", input, other)


def le(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``input <= other`` element-wise, a bool tensor."""
    return _compare("le", "less_equal", input, other)


def gt(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``input > other`` element-wise, a bool tensor."""
    return _compare("gt", "greater", input, other)


def ge(input: Tensor, other: Any) -> Tensor:  # noqa: A002
    """``input >= other`` element-wise, a bool tensor."""
    return _compare("ge", "greater_equal", input, other)


def equal(input: Tensor, other: Tensor) -> bool:  # noqa: A002
    """True when both have the same shape and the same elements (``torch.equal``)."""
    return input.shape == other.shape and bool(eq(input, other).array.all())


def _need_tensor(op: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def isnan(input: Tensor) -> Tensor:  # noqa: A002
    """Where ``input`` is NaN (always False for integer and bool tensors)."""
    _need_tensor("isnan", input)
    return Tensor._from_op(get_array_module(input.array).isnan(input.array), None, 0)


def isfinite(input: Tensor) -> Tensor:  # noqa: A002
    """Where ``input`` is neither NaN nor +-inf."""
    _need_tensor("isfinite", input)
    return Tensor._from_op(get_array_module(input.array).isfinite(input.array), None, 0)


def isinf(input: Tensor) -> Tensor:  # noqa: A002
    """Where ``input`` is +-inf."""
    _need_tensor("isinf", input)
    return Tensor._from_op(get_array_module(input.array).isinf(input.array), None, 0)


def isclose(input: Tensor, other: Any, rtol: float = 1e-05, atol: float = 1e-08,  # noqa: A002
            equal_nan: bool = False) -> Tensor:
    """``|input - other| <= atol + rtol |other|`` element-wise (PyTorch's and NumPy's asymmetric rule;
    infinities are close only to themselves, NaN only with ``equal_nan``)."""
    _need_tensor("isclose", input)
    if rtol < 0 or atol < 0:
        raise ValueError(f"isclose: rtol and atol must be non-negative, got rtol={rtol}, atol={atol}")
    xp = get_array_module(input.array)
    b = _operand("isclose", input, other)
    try:
        out = xp.isclose(input.array, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    except ValueError:
        raise ValueError(f"isclose: shapes {input.shape} and {tuple(getattr(b, 'shape', ()))} cannot be "
                         "broadcast together") from None
    return Tensor._from_op(xp.asarray(out), None, 0)


def allclose(input: Tensor, other: Any, rtol: float = 1e-05, atol: float = 1e-08,  # noqa: A002
             equal_nan: bool = False) -> bool:
    """True when every element is ``isclose`` (a Python bool, as in PyTorch)."""
    return bool(isclose(input, other, rtol, atol, equal_nan).array.all())
