"""Plumbing shared by ``roi_pool`` and ``roi_align``: boxes in either of torchvision's two forms -> (K, 5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor
from handgrad.functional._cnn_util import pair


def _arr(x: Any) -> Any:
    return x.array if isinstance(x, Tensor) else x


def convert_boxes_to_roi_format(boxes: Any, op: str) -> Any:
    """``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` from a ``(K, 5)`` array/Tensor or a list of
    per-image ``(K_i, 4)`` arrays/Tensors (the i-th list entry belongs to image i)."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            a = _arr(b)
            xp = get_array_module(a)
            a = xp.asarray(a)
            if a.ndim != 2 or a.shape[1] != 4:
                raise ValueError(f"{op}: boxes[{i}] must have shape (K_i, 4), got {tuple(a.shape)}")
            parts.append(xp.concatenate([xp.full((a.shape[0], 1), i, dtype=a.dtype), a], axis=1))
        if not parts:
            return numpy.zeros((0, 5))
        xp = get_array_module(parts[0])
        return xp.concatenate(parts, axis=0)
    a = _arr(boxes)
    xp = get_array_module(a)
    a = xp.asarray(a)
    if a.ndim != 2 or a.shape[1] != 5:
        raise ValueError(f"{op}: boxes must be a (K, 5) [batch_index, x1, y1, x2, y2] array or a list of "
                         f"(K_i, 4) arrays, got shape {tuple(a.shape)}")
    return a


def check_rois(x: Any, rois: Any, output_size: Any, op: str) -> tuple[Any, tuple[int, int]]:
    """Validate ``input (N, C, H, W)`` and the RoIs; returns rois in the input's dtype and the output size."""
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {tuple(x.shape)}")
    oh, ow = pair(output_size, "output_size", op)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output_size must be positive, got {(oh, ow)}")
    xp = get_array_module(x)
    r = xp.asarray(rois).astype(x.dtype, copy=False)
    if r.size and not bool(xp.isfinite(r).all()):
        raise ValueError(f"{op}: boxes contain NaN or infinite values")
    b = r[:, 0]
    if r.shape[0] and (bool((b != xp.floor(b)).any()) or bool((b < 0).any()) or bool((b >= x.shape[0]).any())):
        raise ValueError(f"{op}: batch indices must be integers in 0..{x.shape[0] - 1}, got "
                         f"{sorted(set(numpy.asarray(b.tolist()).tolist()))[:5]}")
    return r, (oh, ow)


def groups(batch_index: Any) -> list[tuple[int, Any]]:
    """``[(image, indices of its RoIs)]`` for the images that have RoIs (host ints)."""
    b = numpy.asarray(batch_index.get() if hasattr(batch_index, "get") else batch_index).astype(numpy.int64)
    return [(int(i), numpy.flatnonzero(b == i)) for i in numpy.unique(b)]


def size_pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    return pair(output_size, "output_size", "roi op")


def prepare_roi_call(op: str, input: Any, boxes: Any, output_size: Any, spatial_scale: float
                     ) -> tuple[Any, tuple[int, int]]:
    """The checks shared by ``roi_pool`` and ``roi_align`` (input a Tensor, spatial_scale finite and > 0,
    boxes and output_size valid): the (K, 5) rois in input's dtype and (PH, PW)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f"{op}: spatial_scale must be a positive number, got {spatial_scale}")
    rois = convert_boxes_to_roi_format(boxes, op)
    return check_rois(input.array, rois, output_size, op)
