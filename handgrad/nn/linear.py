"""``Identity``, ``Linear``, ``Flatten`` and ``Unflatten``."""

from __future__ import annotations

import math
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.engine.tensor import Tensor
from handgrad.nn import init
from handgrad.nn._factory import param_dtype, place
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


class Identity(Module):
    """y = x (accepts and ignores any constructor arguments, like PyTorch's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input


class Linear(Module):
    """y = x W^T + b.  x (*, in_features) -> y (*, out_features); W (out_features, in_features), b (out_features,).

    Initialisation as PyTorch: W ~ U(-1/sqrt(in), 1/sqrt(in)) (``kaiming_uniform_(a=sqrt(5))``) and
    b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: feature sizes must be non-negative, got ({in_features}, {out_features})")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = param_dtype("Linear", device, dtype)
        self.weight = Parameter(numpy.empty((out_features, in_features), dtype))
        if bias:
            self.bias = Parameter(numpy.empty((out_features,), dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor) or input.ndim == 0 or input.shape[-1] != self.in_features:
            got = input.shape if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(
                f"Linear(in_features={self.in_features}, out_features={self.out_features}): input {got} must have "
                f"{self.in_features} features in its last dimension"
            )
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one: (N, C, H, W) -> (N, C*H*W) with the defaults."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        n = input.ndim
        if n == 0:
            return input.reshape(1)
        s, e = self.start_dim, self.end_dim
        if not (-n <= s < n and -n <= e < n):
            raise IndexError(f"Flatten: dims ({s}, {e}) are out of range for input {input.shape}")
        s, e = s % n, e % n
        if s > e:
            raise ValueError(
                f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} for input {input.shape}"
            )
        shape = input.shape
        return input.reshape(*shape[:s], -1 if 0 not in shape else _prod(shape[s : e + 1]), *shape[e + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim ``dim`` into ``unflattened_size``: Unflatten(1, (C, H, W)) maps (N, C*H*W) -> (N, C, H, W)."""

    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:
        n = input.ndim
        if not -n <= self.dim < n:
            raise IndexError(f"Unflatten: dim {self.dim} is out of range for input {input.shape}")
        d = self.dim % n
        sizes = list(self.unflattened_size)
        known = _prod([s for s in sizes if s != -1])
        if sizes.count(-1) > 1 or (sizes.count(-1) == 0 and known != input.shape[d]) or (
            sizes.count(-1) == 1 and (known == 0 or input.shape[d] % known)
        ):
            raise ValueError(
                f"Unflatten: cannot split dim {self.dim} of size {input.shape[d]} (input {input.shape}) into "
                f"{self.unflattened_size}"
            )
        return input.reshape(*input.shape[:d], *sizes, *input.shape[d + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


def _prod(xs: Any) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out
