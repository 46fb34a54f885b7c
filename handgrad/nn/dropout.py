"""``Dropout``, ``Dropout1d`` and ``Dropout2d`` (inverted dropout: kept units are scaled by 1 / (1 - p) in training)."""

from __future__ import annotations

from typing import Any

import handgrad.functional as F
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module


class _DropoutNd(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = float(p), inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Training: zero each element with probability p, scale the rest by 1 / (1 - p). Eval: identity.
    Draws come from ``handgrad.manual_seed``'s generator."""

    def forward(self, input: Tensor) -> Any:
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """Training: zero whole channels (N, C, H, W) -> mask (N, C, 1, 1) with probability p, scale the rest by
    1 / (1 - p). Eval: identity."""

    def forward(self, input: Tensor) -> Any:
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout1d(_DropoutNd):
    """Training: zero whole channels of (N, C, L) -> mask (N, C, 1), or of unbatched (C, L) -> mask (C, 1),
    with probability p; scale the rest by 1 / (1 - p). Eval: identity."""

    def forward(self, input: Tensor) -> Any:
        return F.dropout1d(input, self.p, self.training, self.inplace)

