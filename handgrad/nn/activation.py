"""Activation modules (PyTorch's names and arguments), thin wrappers over ``handgrad.functional``."""

from __future__ import annotations

from typing import Any

import handgrad.functional as F
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module


class ReLU(Module):
    """y = max(x, 0)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """y = x if x >= 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """y = x if x > 0 else alpha (e^x - 1)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class GELU(Module):
    """y = x Phi(x) (``approximate='tanh'``: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))))."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    """y = log(1 + e^{beta x}) / beta, and y = x where beta x > threshold (for stability)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class SiLU(Module):
    """y = x sigmoid(x) (swish)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input)


class LogSigmoid(Module):
    """y = ln sigmoid(x) = min(x, 0) - ln(1 + e^{-|x|})."""

    def forward(self, input: Tensor) -> Tensor:
        return F.logsigmoid(input)


class Sigmoid(Module):
    """y = 1 / (1 + e^-x)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(Module):
    """y = tanh x."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


def _softmax_dim(ndim: int) -> int:
    # PyTorch's legacy implicit choice when dim=None: 0 for 0-, 1- and 3-d inputs, else 1
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """y_i = e^{x_i} / sum_j e^{x_j} along ``dim`` (None: PyTorch's legacy implicit dim)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim if self.dim is not None else _softmax_dim(input.ndim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """y_i = x_i - log sum_j e^{x_j} along ``dim`` (None: PyTorch's legacy implicit dim)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Any:
        return F.log_softmax(input, self.dim if self.dim is not None else _softmax_dim(input.ndim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
