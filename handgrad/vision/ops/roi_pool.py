"""``roi_pool`` (Girshick 2015, Fast R-CNN): max pooling over a PH x PW grid of bins in each RoI, with
torchvision's exact semantics (integer bins).

For RoI n = ``[b, x1, y1, x2, y2]``: the corners are scaled and rounded (C's ``round``, half away from
zero): ``sx = round(x1 * scale)``, ``ex = round(x2 * scale)``; ``roi_w = max(ex - sx + 1, 1)``,
``bin_w = roi_w / PW``; bin pw covers columns ``[floor(pw * bin_w), ceil((pw + 1) * bin_w)) + sx``, clipped to
``[0, W]`` (rows likewise). ``out[n, c, ph, pw]`` is the max of ``x[b, c]`` over the bin, 0 for an empty bin.

The forward saves the argmax (the first maximum in row-major order, torchvision's tie rule); the backward
routes each output gradient to its argmax: ``dx[b, c, argmax] += dout[n, c, ph, pw]`` (summed when bins of
several RoIs pick the same pixel). The max over a rectangle is separable: a max over the bin's columns for
every row, then over its rows, vectorised over all RoIs of an image. No gradient flows to the boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.vision.ops._roi_util import check_rois, convert_boxes_to_roi_format, groups

__all__ = ["roi_pool", "RoIPoolFunction", "RoIPool"]

_CHUNK_ELEMENTS = 1 << 23


def _c_round(v: Any) -> Any:
    """C's ``round``: halves away from zero (NumPy's ``round`` goes to even)."""
    xp = get_array_module(v)
    return xp.sign(v) * xp.floor(xp.abs(v) + 0.5)


def _bins(start: Any, end: Any, pooled: int, size: int) -> tuple[Any, Any]:
    """``(lo, hi)`` of each bin, ``(k, pooled)`` int64, clipped to ``[0, size]``."""
    xp = get_array_module(start)
    length = xp.maximum(end - start + 1, 1)
    bin_size = length / pooled
    p = xp.arange(pooled, dtype=bin_size.dtype)[None, :]
    lo = xp.floor(p * bin_size[:, None]).astype(xp.int64) + start[:, None].astype(xp.int64)
    hi = xp.ceil((p + 1) * bin_size[:, None]).astype(xp.int64) + start[:, None].astype(xp.int64)
    return xp.clip(lo, 0, size), xp.clip(hi, 0, size)


class RoIPoolFunction(Function):
    """``input (N, C, H, W) -> (K, C, PH, PW)`` for ``rois (K, 5)`` given at construction (not differentiated)."""

    def __init__(self, rois: Any, output_size: tuple[int, int], spatial_scale: float) -> None:
        self.rois = rois
        self.output_size = output_size
        self.spatial_scale = float(spatial_scale)

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        N, C, H, W = x.shape
        PH, PW = self.output_size
        r = self.rois
        K = r.shape[0]
        s = self.spatial_scale
        sx, sy = _c_round(r[:, 1] * s), _c_round(r[:, 2] * s)
        ex, ey = _c_round(r[:, 3] * s), _c_round(r[:, 4] * s)
        y = xp.zeros((K, C, PH, PW), dtype=x.dtype)
        arg = xp.full((K, C, PH, PW), -1, dtype=xp.int64)
        rows, cols = xp.arange(H), xp.arange(W)
        neg = xp.asarray(-xp.inf, dtype=x.dtype)
        step = max(1, _CHUNK_ELEMENTS // max(1, C * H * W))
        for b, idx_all in groups(r[:, 0]):
            f = x[b][None]  # (1, C, H, W)
            for i0 in range(0, len(idx_all), step):
                idx = idx_all[i0:i0 + step]
                k = len(idx)
                hlo, hhi = _bins(sy[idx], ey[idx], PH, H)
                wlo, whi = _bins(sx[idx], ex[idx], PW, W)
                mh = (rows >= hlo[..., None]) & (rows < hhi[..., None])  # (k, PH, H)
                mw = (cols >= wlo[..., None]) & (cols < whi[..., None])  # (k, PW, W)
                rmax = xp.empty((k, C, H, PW), dtype=x.dtype)
                rarg = xp.empty((k, C, H, PW), dtype=xp.int64)
                for q in range(PW):  # max over the bin's columns, for every row
                    m = xp.where(mw[:, q][:, None, None, :], f, neg)
                    rarg[..., q] = m.argmax(axis=3)
                    rmax[..., q] = xp.take_along_axis(m, rarg[..., q][..., None], axis=3)[..., 0]
                for p in range(PH):  # then over its rows
                    m = xp.where(mh[:, p][:, None, :, None], rmax, neg)  # (k, C, H, PW)
                    h = m.argmax(axis=2)  # (k, C, PW): first row with the max -> row-major first
                    v = xp.take_along_axis(m, h[:, :, None, :], axis=2)[:, :, 0, :]
                    w = xp.take_along_axis(rarg, h[:, :, None, :], axis=2)[:, :, 0, :]
                    empty = ((hhi[:, p] <= hlo[:, p])[:, None, None]
                             | (whi <= wlo)[:, None, :])  # (k, 1, PW)
                    y[idx, :, p, :] = xp.where(empty, 0, v)
                    arg[idx, :, p, :] = xp.where(empty, -1, h * W + w)
        self.argmax = arg
        self.x_shape = x.shape
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        N, C, H, W = self.x_shape
        b = self.rois[:, 0].astype(xp.int64)
        base = (b[:, None] * C + xp.arange(C)[None, :]) * (H * W)  # (K, C) start of each (image, channel)
        flat = base[:, :, None, None] + self.argmax
        ok = self.argmax >= 0
        g = xp.bincount(flat[ok], weights=gy[ok], minlength=N * C * H * W)
        return g.astype(gy.dtype, copy=False).reshape(self.x_shape)


def roi_pool(input: Tensor, boxes: Any, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> Tensor:
    """torchvision's ``roi_pool``: ``input (N, C, H, W)``, ``boxes`` a ``(K, 5)`` array/Tensor
    ``[batch_index, x1, y1, x2, y2]`` or a list of per-image ``(K_i, 4)`` -> ``(K, C, PH, PW)``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"roi_pool: input must be a Tensor, got {type(input).__name__}")
    if not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f"roi_pool: spatial_scale must be a positive number, got {spatial_scale}")
    rois = convert_boxes_to_roi_format(boxes, "roi_pool")
    rois, size = check_rois(input.data, rois, output_size, "roi_pool")
    return RoIPoolFunction(rois, size, spatial_scale)(input)


class RoIPool(Module):
    """Module form of :func:`roi_pool` (torchvision.ops.RoIPool)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Any) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
