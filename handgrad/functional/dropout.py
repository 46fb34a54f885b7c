"""Inverted dropout: zero each element (or whole channel) with probability p, scale the rest by 1/(1-p).

    y = x * m,  m = keep / (1 - p),  keep ~ Bernoulli(1 - p);   dx = dy * m  (the same mask).

The op is the engine's ``MulConstantFunction`` (multiplication by a constant array); this file draws the
masks (``dropout_mask``, also used by the recurrent dropouts and ``nn.LSTM``'s dropout between layers).

Masks come from the generator of the input's device (``handgrad.engine.random.get_rng(device)``), drawn where
the data lives, so ``handgrad.manual_seed`` reproduces them. In eval
mode (``training=False``) or with p = 0 the input is returned unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import device_of_array, get_array_module
from handgrad.engine.ops.arithmetic import MulConstantFunction
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor


def dropout_mask(x: Tensor, p: float, mask_shape: tuple[int, ...], sample_dtype: Any = None) -> Any:
    """The multiplier ``m = keep / (1 - p)``, ``keep ~ Bernoulli(1 - p)``, of ``mask_shape`` (broadcastable
    to ``x``) in ``x``'s dtype and array module; all zeros for ``p = 1``. The uniforms are drawn in ``x``'s
    dtype, or in ``sample_dtype`` when given (the recurrent regularisers draw float64 uniforms, which their
    seeded reference results depend on)."""
    xp = get_array_module(x.array)
    dtype = x.dtype if x.dtype in (numpy.float32, numpy.float64) else numpy.float64
    if sample_dtype is not None:
        dtype = sample_dtype
    if p >= 1.0:
        return xp.zeros(mask_shape, x.dtype)
    keep = get_rng(device_of_array(x.array)).random(mask_shape, dtype=dtype) >= p  # drawn where x lives
    m = keep.astype(x.dtype)
    m *= 1.0 / (1.0 - p)
    return m


def _check(op: str, input: Any, p: float) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got dtype {input.dtype}")


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Element-wise inverted dropout, as ``torch.nn.functional.dropout``. Any shape. ``inplace`` is
    accepted for signature compatibility; handgrad always returns a new tensor."""
    _check("dropout", input, p)
    if not training or p == 0.0:
        return input
    return MulConstantFunction(dropout_mask(input, p, input.shape))(input)


def _channel_dropout(op: str, input: Tensor, p: float, training: bool, ndims: tuple[int, ...]) -> Tensor:
    _check(op, input, p)
    if input.ndim not in ndims:
        raise ValueError(f"{op}: expected a {' or '.join(f'{d}-D' for d in ndims)} input, got shape {input.shape}")
    if not training or p == 0.0:
        return input
    batched = input.ndim == max(ndims)
    lead = 2 if batched else 1  # mask one value per (sample, channel), or per channel when unbatched
    mask_shape = input.shape[:lead] + (1,) * (input.ndim - lead)
    return MulConstantFunction(dropout_mask(input, p, mask_shape))(input)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) input with probability p (``torch.nn.functional.dropout1d``)."""
    return _channel_dropout("dropout1d", input, p, training, (2, 3))


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) input with probability p (``torch.nn.functional.dropout2d``).

    A 3-D input is read as PyTorch 2.x does: (N, C, L), one mask value per (N, C) (channel-wise 1-D
    dropout; PyTorch warns about this case).
    """
    _check("dropout2d", input, p)
    if input.ndim == 3:
        return _channel_dropout("dropout2d", input, p, training, (3,))
    return _channel_dropout("dropout2d", input, p, training, (4,))


__all__ = ["dropout", "dropout1d", "dropout2d"]
