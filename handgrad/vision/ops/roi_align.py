"""``roi_align`` (He et al. 2017, Mask R-CNN): bilinear RoI pooling with torchvision's exact semantics.

For RoI n = ``[b, x1, y1, x2, y2]`` (image coordinates; ``spatial_scale`` maps them onto the feature map),
with ``o = 0.5`` if ``aligned`` else 0::

    start_y = y1 * scale - o,   roi_h = y2 * scale - o - start_y  (>= 1 unless aligned),   bin_h = roi_h / PH
    G_h = sampling_ratio if > 0 else ceil(roi_h / PH)            (samples per bin, same for x)
    y(ph, iy) = start_y + ph * bin_h + (iy + 0.5) * bin_h / G_h
    out[n, c, ph, pw] = 1 / max(G_h G_w, 1) * sum_{iy, ix} bilinear(x[b, c], y(ph, iy), x(pw, ix))

``bilinear`` is torchvision's: a sample with y < -1 or y > H (or x outside [-1, W]) is 0, one in [-1, 0]
is clamped to 0, one past the last row uses the last row. The bilinear weight of a sample factorises into a
row weight times a column weight, and so does the validity test, so per RoI the whole op is a product of
matrices::

    out[n] = A_y[n] @ x[b] @ A_x[n]^T / count[n]      A_y[n]: (PH, H) row weights summed over the samples

computed for all RoIs of one image at once as one GEMM (no per-RoI loop, no gather of feature maps), and
the backward is its transpose: ``dx[b] += sum_n A_y[n]^T @ dout[n] @ A_x[n] / count[n]``. No gradient flows
to the boxes (as in torchvision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.vision.ops._roi_util import groups, prepare_roi_call

__all__ = ["roi_align", "RoIAlignFunction", "RoIAlign"]

_CHUNK_ELEMENTS = 1 << 23  # RoIs of one image are processed in chunks of at most this many T elements


def _interp_matrix(start: Any, length: Any, pooled: int, size: int, sampling_ratio: int) -> tuple[Any, Any]:
    """Row weights ``A (k, pooled, size)`` summed over each bin's samples, and the samples per bin ``(k,)``."""
    xp = get_array_module(start)
    dtype = start.dtype
    bin_size = length / pooled
    if sampling_ratio > 0:
        grid = xp.full(start.shape, sampling_ratio, dtype=xp.int64)
    else:
        grid = xp.ceil(length / pooled).astype(xp.int64)
    gmax = max(1, int(grid.max())) if grid.size else 1
    p = xp.arange(pooled, dtype=dtype)[None, :, None]
    i = xp.arange(gmax, dtype=dtype)[None, None, :]
    g = xp.maximum(grid, 1).astype(dtype)[:, None, None]
    coord = start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / g
    valid = (i < grid[:, None, None]) & (coord >= -1.0) & (coord <= size)
    c = xp.maximum(coord, 0.0)
    low = xp.floor(c).astype(xp.int64)
    edge = low >= size - 1
    low = xp.where(edge, size - 1, low)
    high = xp.where(edge, size - 1, low + 1)
    c = xp.where(edge, low.astype(dtype), c)
    w_high = (c - low) * valid
    w_low = (1.0 - (c - low)) * valid
    cols = xp.arange(size)
    a = ((cols == low[..., None]) * w_low[..., None] + (cols == high[..., None]) * w_high[..., None]).sum(axis=2)
    return a.astype(dtype, copy=False), grid


class RoIAlignFunction(Function):
    """``input (N, C, H, W) -> (K, C, PH, PW)`` for ``rois (K, 5)`` given at construction (not differentiated)."""

    def __init__(self, rois: Any, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool) -> None:
        self.rois = rois
        self.output_size = output_size
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def _matrices(self, x_shape: tuple[int, ...], dtype: Any) -> list[tuple[int, Any, Any, Any, Any]]:
        r = self.rois
        xp = get_array_module(r)
        ph, pw = self.output_size
        H, W = x_shape[2], x_shape[3]
        off = 0.5 if self.aligned else 0.0
        s = self.spatial_scale
        x1, y1 = r[:, 1] * s - off, r[:, 2] * s - off
        rw, rh = r[:, 3] * s - off - x1, r[:, 4] * s - off - y1
        if not self.aligned:  # torchvision's legacy behaviour: RoIs are at least 1x1
            rw, rh = xp.maximum(rw, 1.0), xp.maximum(rh, 1.0)
        out = []
        for b, idx in groups(r[:, 0]):
            ay, gy = _interp_matrix(y1[idx], rh[idx], ph, H, self.sampling_ratio)
            ax, gx = _interp_matrix(x1[idx], rw[idx], pw, W, self.sampling_ratio)
            count = xp.maximum(gy * gx, 1).astype(dtype)
            out.append((b, idx, ay.astype(dtype), ax.astype(dtype), count))
        return out

    def _chunks(self, k: int, C: int, H: int, W: int) -> list[slice]:
        ph = self.output_size[0]
        step = max(1, _CHUNK_ELEMENTS // max(1, ph * C * max(H, W)))
        return [slice(i, min(k, i + step)) for i in range(0, k, step)]

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        N, C, H, W = x.shape
        ph, pw = self.output_size
        y = xp.zeros((self.rois.shape[0], C, ph, pw), dtype=x.dtype)
        self.x_shape = x.shape
        self.mats = self._matrices(x.shape, x.dtype)
        for b, idx, ay, ax, count in self.mats:
            f = x[b].transpose(1, 0, 2).reshape(H, C * W)  # (H, C*W): one GEMM for all RoIs of image b
            for sl in self._chunks(len(idx), C, H, W):
                k = len(idx[sl])
                t = (ay[sl].reshape(k * ph, H) @ f).reshape(k, ph, C, W)
                o = t @ ax[sl].transpose(0, 2, 1)[:, None]  # (k, PH, C, PW)
                y[idx[sl]] = o.transpose(0, 2, 1, 3) / count[sl][:, None, None, None]
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        N, C, H, W = self.x_shape
        ph, pw = self.output_size
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        for b, idx, ay, ax, count in self.mats:
            acc = xp.zeros((H, C * W), dtype=gy.dtype)
            for sl in self._chunks(len(idx), C, H, W):
                k = len(idx[sl])
                g = (gy[idx[sl]] / count[sl][:, None, None, None]).transpose(0, 2, 1, 3)  # (k, PH, C, PW)
                dt = g @ ax[sl][:, None]  # (k, PH, C, W)
                acc += ay[sl].reshape(k * ph, H).T @ dt.reshape(k * ph, C * W)
            gx[b] += acc.reshape(H, C, W).transpose(1, 0, 2)
        return gx


def roi_align(input: Tensor, boxes: Any, output_size: int | Sequence[int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """torchvision's ``roi_align``: ``input (N, C, H, W)``, ``boxes`` a ``(K, 5)`` array/Tensor
    ``[batch_index, x1, y1, x2, y2]`` or a list of per-image ``(K_i, 4)`` -> ``(K, C, PH, PW)``.

    ``sampling_ratio <= 0`` takes ``ceil(roi_size / output_size)`` samples per bin; ``aligned=True`` shifts
    the box by -0.5 pixel so that pixel centres are at integer + 0.5 (Detectron2's correct alignment).
    """
    rois, size = prepare_roi_call("roi_align", input, boxes, output_size, spatial_scale)
    return RoIAlignFunction(rois, size, spatial_scale, sampling_ratio, aligned)(input)


class RoIAlign(Module):
    """Module form of :func:`roi_align` (torchvision.ops.RoIAlign)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Any) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
