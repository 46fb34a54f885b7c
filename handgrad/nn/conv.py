"""``Conv2d`` and ``ConvTranspose2d`` layers over ``handgrad.functional.conv2d`` / ``conv_transpose2d``."""

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


def _pair(name: str, value: Any, owner: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    t = tuple(value)
    if len(t) != 2 or not all(isinstance(v, int) for v in t):
        raise ValueError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    return t  # type: ignore[return-value]


class _ConvNd(Module):
    """Shared parameters, initialisation and repr of the 2-D convolutions (PyTorch's ``_ConvNd``)."""

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, groups: int, bias: bool, padding_mode: str, output_padding: Any, device: Any,
                 dtype: Any) -> None:
        super().__init__()
        name = type(self).__name__
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups}")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels={out_channels} must be divisible by groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and _pair("stride", stride, name) != (1, 1):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding: Any = padding
        else:
            self.padding = _pair("padding", padding, name)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("kernel_size", kernel_size, name)
        self.stride = _pair("stride", stride, name)
        self.dilation = _pair("dilation", dilation, name)
        self.output_padding = _pair("output_padding", output_padding, name)
        self.padding_mode = padding_mode
        dtype = param_dtype(name, device, dtype)
        if self.transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(numpy.empty(shape, dtype))
        if bias:
            self.bias = Parameter(numpy.empty((out_channels,), dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        place(self, device)

    def reset_parameters(self) -> None:
        """PyTorch's default: W ~ kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)); b ~ U(+-1/sqrt(fan_in))
        with fan_in = weight.shape[1] * kh * kw."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _check_input(self, input: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in (3, 4):
            got = input.shape if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{name}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got {got}")
        c = input.shape[-3]
        if c != self.in_channels:
            raise ValueError(
                f"{name}(in_channels={self.in_channels}): input {input.shape} has {c} channels, expected "
                f"{self.in_channels} (weight {self.weight.shape})"
            )

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D cross-correlation: (N, C_in, H, W) -> (N, C_out, H_out, W_out) with
    ``H_out = floor((H + 2 p - d (k - 1) - 1) / s) + 1``. Weight (C_out, C_in / groups, kh, kw), bias (C_out,)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
        dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution (the input-gradient of Conv2d): (N, C_in, H, W) -> (N, C_out, H_out, W_out) with
    ``H_out = (H - 1) s - 2 p + d (k - 1) + output_padding + 1``. Weight (C_in, C_out / groups, kh, kw).
    ``forward(input, output_size)`` picks the output_padding that yields ``output_size`` (last two dims)."""

    transposed = True

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
        output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros",
        device: Any = None, dtype: Any = None,
    ) -> None:
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, device, dtype)
        for i in range(2):
            if self.output_padding[i] >= max(self.stride[i], self.dilation[i]):
                raise ValueError(
                    f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than stride "
                    f"{self.stride} or dilation {self.dilation}"
                )

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple[int, int]:
        if output_size is None:
            return self.output_padding
        size = tuple(output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must give (H, W), got {output_size!r}")
        pads = []
        for i in range(2):
            n = input.shape[-2 + i]
            lo = (n - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (self.kernel_size[i] - 1) + 1
            hi = lo + self.stride[i] - 1
            if not lo <= size[i] <= hi:
                raise ValueError(
                    f"ConvTranspose2d: requested output_size {tuple(size)} is not reachable from input {input.shape}; "
                    f"dim {i} must be between {lo} and {hi}"
                )
            pads.append(size[i] - lo)
        return (pads[0], pads[1])

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        self._check_input(input)
        op = self._output_padding(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, op, self.groups,
                                  self.dilation)
