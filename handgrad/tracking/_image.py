"""Frame checks and sub-window sampling shared by the trackers (host NumPy + numba)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit


def check_frame(frame: np.ndarray, op: str) -> np.ndarray:
    """``frame`` as an ``(H, W, 3)`` uint8 array (a grey ``(H, W)`` frame is repeated to 3 channels)."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"{op}: expected an H x W x 3 frame, got shape {np.shape(frame)}")
    if a.dtype != np.uint8:
        raise ValueError(f"{op}: expected a uint8 frame, got dtype {a.dtype}")
    return a


def check_box(box: Sequence[float], frame_shape: tuple[int, ...], op: str) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` with ``w, h > 0`` that overlaps the frame, as floats."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: expected a box (x, y, w, h), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"{op}: the box needs finite x, y and w, h > 0, got {(x, y, w, h)}")
    H, W = frame_shape[:2]
    if x >= W or y >= H or x + w <= 0 or y + h <= 0:
        raise ValueError(f"{op}: the box {(x, y, w, h)} lies outside the {W}x{H} frame")
    return x, y, w, h


@njit(cache=True)
def _subwindow(img: np.ndarray, cx: float, cy: float, ww: float, wh: float, oh: int, ow: int) -> np.ndarray:
    # pragma: no cover - compiled
    h, w, c = img.shape
    out = np.empty((oh, ow, c), dtype=np.float32)
    sx = ww / ow
    sy = wh / oh
    x0 = cx - ww / 2.0
    y0 = cy - wh / 2.0
    for i in range(oh):
        fy = y0 + (i + 0.5) * sy - 0.5
        fy = min(max(fy, 0.0), h - 1.0)
        iy = min(int(fy), h - 2) if h > 1 else 0
        ay = fy - iy
        for j in range(ow):
            fx = x0 + (j + 0.5) * sx - 0.5
            fx = min(max(fx, 0.0), w - 1.0)
            ix = min(int(fx), w - 2) if w > 1 else 0
            ax = fx - ix
            for k in range(c):
                top = img[iy, ix, k] * (1.0 - ax) + img[iy, ix + 1, k] * ax
                bot = img[iy + 1, ix, k] * (1.0 - ax) + img[iy + 1, ix + 1, k] * ax
                out[i, j, k] = top * (1.0 - ay) + bot * ay
    return out


def subwindow(frame: np.ndarray, center: tuple[float, float], size: tuple[float, float],
              out_size: tuple[int, int]) -> np.ndarray:
    """Bilinear crop of the ``size = (w, h)`` window centred at ``center = (cx, cy)`` (continuous
    coordinates: pixel ``i`` covers ``[i, i + 1)``) resampled to ``out_size = (out_w, out_h)``; pixels
    outside the frame repeat the border (as OpenCV's ``BORDER_REPLICATE``). Returns ``(out_h, out_w, C)``
    float32 in the frame's units."""
    img = frame if frame.ndim == 3 else frame[:, :, None]
    return _subwindow(img, float(center[0]), float(center[1]), float(size[0]), float(size[1]),
                      int(out_size[1]), int(out_size[0]))
