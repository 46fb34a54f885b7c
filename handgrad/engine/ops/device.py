"""Moving a tensor between devices, as a differentiable op (``Tensor.to(device)``)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import Device, device_of_array
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor


class ToDeviceFunction(Function):
    """y = x copied to ``device``;  dx = gy copied back to x's device (PyTorch's ``to`` is differentiable the
    same way). Shapes and dtypes are unchanged."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def forward(self, x: Any) -> Any:
        self.source = device_of_array(x)
        return self.device.send(x)

    def backward(self, gy: Any) -> Any:
        return self.source.send(gy)


def to_device(x: Tensor, device: Device) -> Tensor:
    """``x`` on ``device`` (a new tensor in the graph; use ``Tensor.to``)."""
    return ToDeviceFunction(device)(x)
