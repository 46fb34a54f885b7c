"""``roi_pool`` (Girshick 2015, Fast R-CNN): max pooling over a PH x PW grid of bins in each RoI, with
torchvision's exact semantics (integer bins).

For RoI n = ``[b, x1, y1, x2, y2]``: the corners are scaled and rounded (C's ``round``, half away from
zero): ``sx = round(x1 * scale)``, ``ex = round(x2 * scale)``; ``roi_w = max(ex - sx + 1, 1)``,
``bin_w = roi_w / PW``; bin pw covers columns ``[floor(pw * bin_w), ceil((pw + 1) * bin_w)) + sx``, clipped to
``[0, W]`` (rows likewise). ``out[n, c, ph, pw]`` is the max of ``x[b, c]`` over the bin, 0 for an empty bin.

The forward saves the argmax (the first maximum in row-major order, torchvision's tie rule); the backward
routes each output gradient to its argmax: ``dx[b, c, argmax] += dout[n, c, ph, pw]`` (summed when bins of
several RoIs pick the same pixel). The max over a rectangle is separable: a max over the bin's columns for
every row, then over its rows, vectorised over chunks of RoIs, each on its own window of the map.
No gradient flows to the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.vision.ops._roi_util import groups, prepare_roi_call

__all__ = ["roi_pool", "RoIPoolFunction", "RoIPool"]

_CHUNK_ROIS = 64  # RoIs per vectorised chunk (sorted by window size)


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
        neg = xp.asarray(-xp.inf, dtype=x.dtype)
        for b, idx_img in groups(r[:, 0]):
            f = x[b]  # (C, H, W)
            hlo_all, hhi_all = _bins(sy[idx_img], ey[idx_img], PH, H)
            wlo_all, whi_all = _bins(sx[idx_img], ex[idx_img], PW, W)
            # Work on each RoI's window of the map (padded to the largest window of its chunk), not on the
            # whole map: RoIs are sorted by window area so that a chunk's windows have similar sizes.
            area = (hhi_all.max(1) - hlo_all.min(1)) * (whi_all.max(1) - wlo_all.min(1))
            order = numpy.argsort(numpy.asarray(area.get() if hasattr(area, "get") else area), kind="stable")
            for i0 in range(0, len(order), _CHUNK_ROIS):
                sel = order[i0:i0 + _CHUNK_ROIS]
                idx = idx_img[sel]
                hlo, hhi, wlo, whi = hlo_all[sel], hhi_all[sel], wlo_all[sel], whi_all[sel]
                r0, c0 = hlo.min(1), wlo.min(1)  # (k,) window origin
                lh = max(1, int((hhi.max(1) - r0).max()))
                lw = max(1, int((whi.max(1) - c0).max()))
                ri = xp.minimum(r0[:, None] + xp.arange(lh), H - 1)  # (k, lh), padding repeats the last row
                ci = xp.minimum(c0[:, None] + xp.arange(lw), W - 1)
                win = f[:, ri[:, :, None], ci[:, None, :]].transpose(1, 0, 2, 3)  # (k, C, lh, lw)
                hlo, hhi = hlo - r0[:, None], hhi - r0[:, None]
                wlo, whi = wlo - c0[:, None], whi - c0[:, None]
                rows, cols = xp.arange(lh), xp.arange(lw)
                mh = (rows >= hlo[..., None]) & (rows < hhi[..., None])  # (k, PH, lh)
                mw = (cols >= wlo[..., None]) & (cols < whi[..., None])  # (k, PW, lw)
                k = len(idx)
                # Running max over the window's columns (strict '>' keeps the first maximum), all PW bins at
                # once: lw steps over (k, C, lh, PW) arrays, faster than argmax over a short last axis.
                rmax = xp.full((k, C, lh, PW), neg, dtype=x.dtype)
                rarg = xp.zeros((k, C, lh, PW), dtype=xp.int64)
                for j in range(lw):
                    cand = xp.where(mw[:, None, None, :, j], win[..., j:j + 1], neg)
                    upd = cand > rmax
                    rmax = xp.where(upd, cand, rmax)
                    rarg = xp.where(upd, j, rarg)
                # then over the rows, all PH bins at once: (k, C, PH, PW)
                best = xp.full((k, C, PH, PW), neg, dtype=x.dtype)
                barg = xp.zeros((k, C, PH, PW), dtype=xp.int64)
                for i in range(lh):
                    cand = xp.where(mh[:, None, :, None, i], rmax[:, :, i:i + 1, :], neg)
                    upd = cand > best
                    best = xp.where(upd, cand, best)
                    barg = xp.where(upd, i * W + rarg[:, :, i:i + 1, :], barg)
                empty = (hhi <= hlo)[:, None, :, None] | (whi <= wlo)[:, None, None, :]  # (k, 1, PH, PW)
                y[idx] = xp.where(empty, 0, best)
                arg[idx] = xp.where(empty, -1, barg + r0[:, None, None, None] * W + c0[:, None, None, None])
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
    rois, size = prepare_roi_call("roi_pool", input, boxes, output_size, spatial_scale)
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
