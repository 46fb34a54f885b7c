"""Multiply-add counting for convolutional networks: run the model once and count what its layers do.

The count is the usual one of the anytime-prediction papers (MSDNet's "FLOPs"): the multiply-adds of the
convolutions and fully connected layers, per image. Batch norm, ReLU, additions of branches, pooling and
up-sampling are not counted (they are a few per output element, negligible next to a 3x3 convolution).

    Conv2d      (C_in -> C_out, k_h x k_w, groups g), output (H_out, W_out):
                macs = H_out * W_out * C_out * (C_in / g) * k_h * k_w
    ConvTranspose2d:  macs = H_in * W_in * C_in * (C_out / g) * k_h * k_w
    Linear      (in -> out):  macs = in * out    (per row of the input; all leading dims but the batch count)

``count_multiply_adds(model, x)`` returns the total per image; ``multiply_adds_by_module`` the per-module
table (dotted module names), which is how an early-exit network's classifiers are priced separately.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from handgrad import nn
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor

__all__ = ["conv2d_multiply_adds", "count_multiply_adds", "linear_multiply_adds", "multiply_adds_by_module"]


def conv2d_multiply_adds(conv: Any, out_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one image through ``conv`` (an ``nn.Conv2d``) whose output is ``(N, C_out, H, W)``."""
    kh, kw = conv.kernel_size
    return int(out_shape[2] * out_shape[3] * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw)


def linear_multiply_adds(linear: Any, out_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one sample through ``linear`` whose output is ``(N, ..., out_features)``."""
    rows = 1
    for d in out_shape[1:-1]:
        rows *= d
    return int(rows * linear.in_features * linear.out_features)


def multiply_adds_by_module(model: Any, x: Tensor, call: Callable[[Any, Tensor], Any] | None = None
                            ) -> OrderedDict[str, int]:
    """Per-module multiply-adds per image of one forward ``call(model, x)`` (default ``model(x)``), in the
    order the modules ran; modules that ran more than once are summed. Runs under ``no_grad`` in the
    model's current mode (batch norm in train mode uses the batch, so prefer ``model.eval()``)."""
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"count_multiply_adds: x must have a batch dimension of at least 1, got shape {x.shape}")
    table: OrderedDict[str, int] = OrderedDict()
    patched = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            cost = conv2d_multiply_adds
        elif isinstance(m, nn.ConvTranspose2d):
            def cost(c: Any, s: tuple[int, ...], _m: Any = m) -> int:  # priced by its input: see module doc
                kh, kw = c.kernel_size
                return int(_m._last_in[2] * _m._last_in[3] * c.in_channels * (c.out_channels // c.groups) * kh * kw)
        elif isinstance(m, nn.Linear):
            cost = linear_multiply_adds
        else:
            continue

        def counted(*args: Any, _m: Any = m, _name: str = name, _cost: Any = cost, _fwd: Any = m.forward,
                    **kwargs: Any) -> Any:
            _m._last_in = tuple(args[0].shape)
            y = _fwd(*args, **kwargs)
            table[_name] = table.get(_name, 0) + _cost(_m, tuple(y.shape))
            return y

        m.forward = counted  # an instance attribute shadows the class's forward (Module.__call__ -> forward)
        patched.append(m)
    try:
        with no_grad():
            (call or (lambda mod, t: mod(t)))(model, x)
    finally:
        for m in patched:
            del m.forward
            m.__dict__.pop("_last_in", None)
    return table


def count_multiply_adds(model: Any, x: Tensor, call: Callable[[Any, Tensor], Any] | None = None) -> int:
    """Total multiply-adds per image of one forward (conv + linear layers; see the module docstring)."""
    return int(sum(multiply_adds_by_module(model, x, call).values()))
