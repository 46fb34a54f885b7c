"""``Parameter``: a leaf tensor that a Module registers as trainable."""

from __future__ import annotations

from typing import Any

from handgrad.engine.tensor import Tensor


class Parameter(Tensor):
    """A Tensor with ``requires_grad=True`` by default, picked up by ``Module.parameters()``."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data.array if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
