"""Affine map over the last axis, as ``torch.nn.functional.linear``: one GEMM for all leading axes."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


class LinearFunction(Function):
    """y = x W^T + b with x (*, in), W (out, in), b (out,), y (*, out).

    With X = x reshaped to (M, in) and dY to (M, out):  dX = dY W,  dW = dY^T X,  db = sum_rows dY.
    """

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])
        y = x2 @ w.T
        if b is not None:
            y += b
        if self.needs_input_grad[1]:
            self.x2 = x2
        if self.needs_input_grad[0]:
            self.w = w
        return y.reshape(*x.shape[:-1], w.shape[0])

    def backward(self, gy: Any) -> Any:
        need = self.needs_input_grad
        g2 = gy.reshape(-1, gy.shape[-1])
        gx = (g2 @ self.w).reshape(self.x_shape) if need[0] else None
        gw = g2.T @ self.x2 if need[1] else None
        if len(need) == 2:
            return gx, gw
        return gx, gw, (get_array_module(g2).ones(g2.shape[0], g2.dtype) @ g2 if need[2] else None)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = input @ weight.T + bias. input (*, in) with at least one axis, weight (out, in), bias (out,)."""
    op = "linear"
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}: input and weight must be Tensors")
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: input {input.shape} has {input.shape[-1] if input.ndim else 0} features but weight "
            f"{weight.shape} expects {weight.shape[1]}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},) for weight {weight.shape}, got {bias.shape}")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(
            f"{op}: dtypes differ: input {input.dtype}, weight {weight.dtype}"
            + ("" if bias is None else f", bias {bias.dtype}")
        )
    args = (input, weight) if bias is None else (input, weight, bias)
    return LinearFunction()(*args)


__all__ = ["linear"]
