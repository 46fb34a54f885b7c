"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d`` and ``LayerNorm`` (over ``handgrad.functional``)."""

from __future__ import annotations

from typing import Any

import numpy

import handgrad.functional as F
from handgrad.engine.tensor import Tensor
from handgrad.nn import init
from handgrad.nn._factory import param_dtype, place
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


class _BatchNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel (axis 1), as PyTorch's ``_BatchNorm``.

    Training: mean / biased var of the batch (over N and spatial axes); the running statistics are
    updated as ``r <- (1 - momentum) r + momentum * batch_stat`` with the UNBIASED batch variance, and
    ``num_batches_tracked`` counts the batches (``momentum=None`` then means the cumulative average
    ``1 / num_batches_tracked``). Evaluation uses the running statistics, unless
    ``track_running_stats=False``, which keeps batch statistics in eval too.
    Parameters: weight (C,) = 1, bias (C,) = 0 if ``affine``. Buffers: running_mean (C,) = 0,
    running_var (C,) = 1, num_batches_tracked () = 0 (int64) if ``track_running_stats``.
    """

    _dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.use_bias = affine, track_running_stats, bias
        dtype = param_dtype(type(self).__name__, device, dtype)
        if affine:
            self.weight = Parameter(numpy.ones(num_features, dtype))
            if bias:
                self.bias = Parameter(numpy.zeros(num_features, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(numpy.zeros(num_features, dtype)))
            self.register_buffer("running_var", Tensor(numpy.ones(num_features, dtype)))
            self.register_buffer("num_batches_tracked", Tensor(numpy.array(0, dtype=numpy.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        place(self, device)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.array[...] = 0
            self.running_var.array[...] = 1
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in self._dims:
            got = f"{input.ndim}D input {input.shape}" if isinstance(input, Tensor) else type(input).__name__
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"{name}: expected {want} input, got {got}")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{name}(num_features={self.num_features}): input {input.shape} has {input.shape[1]} channels "
                f"in dim 1, expected {self.num_features}"
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.array += 1  # in place: the buffer object stays the same
            factor = 1.0 / float(self.num_batches_tracked.array) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight, self.bias, bn_training, factor, self.eps,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.use_bias}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs (statistics over N, and L)."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs (statistics per channel over N, H, W)."""

    _dims = (4,)


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the last ``len(normalized_shape)``
    dims of each sample (biased variance). weight = 1 and bias = 0 of shape ``normalized_shape`` if
    ``elementwise_affine`` (``bias=False`` drops the bias)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps, self.elementwise_affine, self.use_bias = eps, elementwise_affine, bias
        dtype = param_dtype("LayerNorm", device, dtype)
        if elementwise_affine:
            self.weight = Parameter(numpy.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(numpy.zeros(self.normalized_shape, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        place(self, device)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if not isinstance(input, Tensor) or input.shape[input.ndim - k :] != self.normalized_shape or input.ndim < k:
            got = input.shape if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(
                f"LayerNorm(normalized_shape={self.normalized_shape}): input {got} must end with "
                f"{self.normalized_shape}"
            )
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.use_bias}")


class GroupNorm(Module):
    """Group normalisation (Wu & He 2018): the C channels of each sample are split into ``num_groups`` groups;
    each group is normalised over its channels and all spatial positions (biased variance), then scaled
    and shifted per channel. input (N, C, *) -> same shape; weight = 1, bias = 0 of shape (C,) if ``affine``."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = int(num_groups), int(num_channels), eps, affine
        dtype = param_dtype("GroupNorm", device, dtype)
        if affine:
            self.weight = Parameter(numpy.ones((num_channels,), dtype))
            self.bias = Parameter(numpy.zeros((num_channels,), dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        place(self, device)

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

