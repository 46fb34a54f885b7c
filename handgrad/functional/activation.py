"""Activation functions with ``torch.nn.functional``'s names, arguments and defaults.

Each forwards to one hand-written op in ``handgrad.engine.ops`` (forward and backward side by side there).
``inplace=`` is accepted where PyTorch has it, for drop-in compatibility, and ignored: handgrad ops never
write into their input.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.ops import activation as _act
from handgrad.engine.ops import unary as _unary
from handgrad.engine.ops.softmax import log_softmax as _log_softmax_op
from handgrad.engine.ops.softmax import softmax as _softmax_op
from handgrad.engine.tensor import Tensor
from handgrad.functional import _act_kernels  # noqa: F401 - registers the compiled ReLU with the engine's op


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002 - torch argument name
    """max(x, 0); gradient 1 where x > 0, else 0."""
    _unary._need_tensor("relu", input)
    return _unary.relu(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:  # noqa: A002
    """x where x > 0, else negative_slope * x."""
    return _act.leaky_relu(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    """x where x > 0, else alpha (e^x - 1)."""
    return _act.elu(input, alpha)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """x Phi(x) with the normal CDF Phi (``approximate='none'``, via erf) or its tanh approximation."""
    return _act.gelu(input, approximate)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    """ln(1 + e^{beta x}) / beta, linear (= x) where beta x > threshold."""
    return _act.softplus(input, beta, threshold)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """ln sigmoid(x) = min(x, 0) - ln(1 + e^{-|x|}) (exact at both tails)."""
    return _act.logsigmoid(input)


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """x sigmoid(x)."""
    return _act.silu(input)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """1 / (1 + e^-x)."""
    _unary._need_tensor("sigmoid", input)
    return _unary.sigmoid(input)


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    """tanh x."""
    _unary._need_tensor("tanh", input)
    return _unary.tanh(input)


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:  # noqa: A002
    """e^x / sum e^x along ``dim`` (stable)."""
    return _softmax_op(input, dim, dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:  # noqa: A002
    """x - ln sum e^x along ``dim`` (stable)."""
    return _log_softmax_op(input, dim, dtype)
