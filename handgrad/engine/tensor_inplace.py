"""``Tensor``'s in-place methods with PyTorch's names: ``add_ sub_ mul_ div_ zero_ fill_ copy_ clamp_
masked_fill_ scatter_ index_add_ uniform_ normal_`` and ``+= -= *= /= //=``. Each returns ``self``; the machinery
(version counters, the graph rewrite, the leaf rule) is ``handgrad.engine.inplace.apply_inplace``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import handgrad.engine as _engine_package
from handgrad.engine import tensor as _tensor_module

if TYPE_CHECKING:
    from handgrad.engine.tensor import Tensor


def _ops() -> Any:
    return _tensor_module._ops


class TensorInplaceMethods:
    """In-place methods of ``Tensor`` (no state)."""

    __slots__ = ()

    @property
    def _version(self) -> int:
        """How many times this tensor's data was modified in place (shared with ``detach()``-ed aliases and
        with every view of the same base)."""
        v = getattr(self, "_view", None)  # a view's counter is its root base's
        vc = getattr(self if v is None else v[0], "_vc", None)
        return 0 if vc is None else vc[0]

    def _inplace(self, op: str, compute: Any, *others: Any) -> Tensor:
        # engine.inplace is loaded by tensor.py's late imports before any method can run
        return _engine_package.inplace.apply_inplace(op, self, compute, others)  # type: ignore[arg-type]

    # -- arithmetic ---------------------------------------------------------------------------------------
    def add_(self, other: Any, *, alpha: float = 1) -> Tensor:
        o = other if alpha == 1 else other * alpha
        return self._inplace("add_", lambda t: _ops().add(t, o), o)

    def sub_(self, other: Any, *, alpha: float = 1) -> Tensor:
        o = other if alpha == 1 else other * alpha
        return self._inplace("sub_", lambda t: _ops().sub(t, o), o)

    def mul_(self, other: Any) -> Tensor:
        return self._inplace("mul_", lambda t: _ops().mul(t, other), other)

    def div_(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return self._inplace("div_", lambda t: _ops().div(t, other, rounding_mode=rounding_mode), other)

    def __iadd__(self, other: Any) -> Tensor:
        return self.add_(other)

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other)

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other)

    def __ifloordiv__(self, other: Any) -> Tensor:
        return self.div_(other, rounding_mode="floor")

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch argument names
        return self._inplace("clamp_", lambda t: _ops().clamp(t, min, max), min, max)

    clip_ = clamp_

    # -- writes ---------------------------------------------------------------------------------------------
    def fill_(self, value: Any) -> Tensor:
        v = value.array if hasattr(value, "array") and hasattr(value, "requires_grad") else value
        return self._inplace("fill_", lambda t: _ops().fill(t, v))

    def zero_(self) -> Tensor:
        return self._inplace("zero_", lambda t: _ops().fill(t, 0))

    def copy_(self, src: Any, non_blocking: bool = False) -> Tensor:
        """Copy ``src`` (broadcast to this shape, cast to this dtype and device) into this tensor; the gradient
        flows to ``src``."""
        def compute(t: Tensor) -> Tensor:
            s = src if hasattr(src, "requires_grad") else _engine_package.factories.tensor(src)
            s = s.to(t.device)  # type: ignore[attr-defined]
            if s.dtype != t.dtype:
                s = s.to(t.dtype)
            if s.shape != t.shape:
                s = _ops().expand(s, *t.shape)
            return _ops().add(_ops().fill(t, 0), s)  # 0 * old + src: the graph reaches src only
        return self._inplace("copy_", compute, src)

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        return self._inplace("masked_fill_", lambda t: _ops().masked_fill(t, mask, value), value)

    def scatter_(self, dim: int, index: Any, src: Any = None, *, value: Any = None,
                 reduce: str | None = None) -> Tensor:
        """``self[index[i][j]][j] = src[i][j]`` (dim 0), or ``value`` (also accepted as a number in place of
        ``src``, as PyTorch's overload); ``reduce='add'`` adds instead of writing."""
        if src is not None and not hasattr(src, "requires_grad") and value is None:
            src, value = None, src
        if reduce is not None:
            if reduce != "add":
                raise ValueError(f"scatter_: reduce={reduce!r} is not supported (only 'add')")
            return self._inplace("scatter_", lambda t: _ops().scatter_add(t, dim, index, src), src)
        return self._inplace("scatter_", lambda t: _ops().scatter(t, dim, index, src, value=value), src)

    def scatter_add_(self, dim: int, index: Any, src: Any) -> Tensor:
        return self._inplace("scatter_add_", lambda t: _ops().scatter_add(t, dim, index, src), src)

    def index_add_(self, dim: int, index: Any, source: Any, *, alpha: float = 1) -> Tensor:
        return self._inplace("index_add_", lambda t: _ops().index_add(t, dim, index, source, alpha=alpha),
                             source)

    # -- random fills (from handgrad's seeded generator of this tensor's device) -------------------------------
    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:  # torch's names are from/to
        rng = _engine_package.random.get_rng(self.device)  # type: ignore[attr-defined]
        draws = rng.uniform(a, b, size=self.shape)  # type: ignore[attr-defined]
        return self._inplace("uniform_", lambda t: _ops().fill(t, draws))

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        rng = _engine_package.random.get_rng(self.device)  # type: ignore[attr-defined]
        draws = rng.standard_normal(self.shape) * std + mean  # type: ignore[attr-defined]
        return self._inplace("normal_", lambda t: _ops().fill(t, draws))
