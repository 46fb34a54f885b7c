"""Cross-correlation of a search feature map with a per-sample kernel (the Siamese trackers' core op).

Two forms, both differentiable in both inputs (hand-written backward):

* depth-wise (SiamRPN++'s; the default of :class:`handgrad.tracking.SiamRPN`): each channel of the search
  features ``x (B, C, H, W)`` is correlated with the same channel of the template ``z (B, C, h, w)``::

      y[b, c, i, j] = sum_{u, v} x[b, c, i + u, j + v] z[b, c, u, v]          y: (B, C, H-h+1, W-w+1)

  = ``conv2d(x.reshape(1, B C, H, W), z.reshape(B C, 1, h, w), groups=B C)``;

* up-channel (the original SiamRPN's): the template is turned into ``O`` full kernels ``k (B, O, C, h, w)``::

      y[b, o, i, j] = sum_{c, u, v} x[b, c, i + u, j + v] k[b, o, c, u, v]     y: (B, O, H-h+1, W-w+1)

  = ``conv2d(x.reshape(1, B C, H, W), k.reshape(B O, C, h, w), groups=B)``.

Both loop over the ``h w`` kernel offsets (a handful at tracking sizes) with whole-batch array operations,
so no im2col copy of the search map is made. Backward:
``dz[b,c,u,v] = sum_ij dy[b,c,i,j] x[b,c,i+u,j+v]``, ``dx[b,c,i+u,j+v] += dy[b,c,i,j] z[b,c,u,v]`` (and the
same with the ``o`` sum / matrix products for the up-channel form).
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.tensor import Tensor

__all__ = ["xcorr_depthwise", "xcorr_up", "DepthwiseXCorrFunction", "UpChannelXCorrFunction"]


class DepthwiseXCorrFunction(Function):
    """Depth-wise cross-correlation; inputs ``x (B, C, H, W)``, ``z (B, C, h, w)``."""

    def forward(self, x: Any, z: Any) -> Any:
        xp = get_array_module(x, z)
        B, C, H, W = x.shape
        h, w = z.shape[2:]
        ho, wo = H - h + 1, W - w + 1
        y = xp.zeros((B, C, ho, wo), dtype=xp.result_type(x, z))
        for u in range(h):
            for v in range(w):
                y += x[:, :, u:u + ho, v:v + wo] * z[:, :, u:u + 1, v:v + 1]
        self.x, self.z = x, z
        return y

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, z = self.x, self.z
        h, w = z.shape[2:]
        ho, wo = gy.shape[2:]
        gx = xp.zeros_like(x) if self.needs_input_grad[0] else None
        gz = xp.empty_like(z) if self.needs_input_grad[1] else None
        for u in range(h):
            for v in range(w):
                if gx is not None:
                    gx[:, :, u:u + ho, v:v + wo] += gy * z[:, :, u:u + 1, v:v + 1]
                if gz is not None:
                    gz[:, :, u, v] = (gy * x[:, :, u:u + ho, v:v + wo]).sum(axis=(2, 3))
        return gx, gz


class UpChannelXCorrFunction(Function):
    """Up-channel cross-correlation; inputs ``x (B, C, H, W)``, ``k (B, O, C, h, w)``."""

    def forward(self, x: Any, k: Any) -> Any:
        xp = get_array_module(x, k)
        B, C, H, W = x.shape
        O, h, w = k.shape[1], k.shape[3], k.shape[4]
        ho, wo = H - h + 1, W - w + 1
        y = xp.zeros((B, O, ho * wo), dtype=xp.result_type(x, k))
        for u in range(h):
            for v in range(w):
                xs = x[:, :, u:u + ho, v:v + wo].reshape(B, C, ho * wo)
                y += k[:, :, :, u, v] @ xs  # (B, O, C) @ (B, C, M)
        self.x, self.k = x, k
        return y.reshape(B, O, ho, wo)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, k = self.x, self.k
        B, C = x.shape[:2]
        O, h, w = k.shape[1], k.shape[3], k.shape[4]
        ho, wo = gy.shape[2:]
        g = gy.reshape(B, O, ho * wo)
        gx = xp.zeros_like(x) if self.needs_input_grad[0] else None
        gk = xp.empty_like(k) if self.needs_input_grad[1] else None
        for u in range(h):
            for v in range(w):
                if gx is not None:
                    gx[:, :, u:u + ho, v:v + wo] += (k[:, :, :, u, v].transpose(0, 2, 1) @ g).reshape(B, C, ho, wo)
                if gk is not None:
                    xs = x[:, :, u:u + ho, v:v + wo].reshape(B, C, ho * wo)
                    gk[:, :, :, u, v] = g @ xs.transpose(0, 2, 1)
        return gx, gk


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def xcorr_depthwise(x: Tensor, z: Tensor) -> Tensor:
    """Depth-wise cross-correlation ``(B, C, H, W), (B, C, h, w) -> (B, C, H-h+1, W-w+1)``."""
    if x.ndim != 4 or z.ndim != 4 or _shape(x)[:2] != _shape(z)[:2]:
        raise ValueError(f"xcorr_depthwise: expected x (B, C, H, W) and z (B, C, h, w) with equal B, C; "
                         f"got {_shape(x)} and {_shape(z)}")
    if z.shape[2] > x.shape[2] or z.shape[3] > x.shape[3]:
        raise ValueError(f"xcorr_depthwise: the kernel {_shape(z)} is larger than the search map {_shape(x)}")
    return DepthwiseXCorrFunction()(x, z)


def xcorr_up(x: Tensor, k: Tensor) -> Tensor:
    """Up-channel cross-correlation ``(B, C, H, W), (B, O, C, h, w) -> (B, O, H-h+1, W-w+1)``."""
    if x.ndim != 4 or k.ndim != 5 or k.shape[0] != x.shape[0] or k.shape[2] != x.shape[1]:
        raise ValueError(f"xcorr_up: expected x (B, C, H, W) and k (B, O, C, h, w) with equal B, C; "
                         f"got {_shape(x)} and {_shape(k)}")
    if k.shape[3] > x.shape[2] or k.shape[4] > x.shape[3]:
        raise ValueError(f"xcorr_up: the kernel {_shape(k)} is larger than the search map {_shape(x)}")
    return UpChannelXCorrFunction()(x, k)
