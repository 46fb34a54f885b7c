"""Non-maximum suppression, ``torchvision.ops.nms`` and ``batched_nms``, on the host.

Greedy NMS: visit the boxes by decreasing score; keep a box unless a box kept before it overlaps it with
IoU > ``iou_threshold``. The loop is inherently sequential, so it runs on the host in numba (a NumPy
fallback does one vectorised IoU row per kept box when numba is missing). Ties in score keep the lower
index first (a stable sort), so the result is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.tensor import Tensor

try:
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency; the fallback keeps a bare install working
    _HAVE_NUMBA = False

__all__ = ["nms", "batched_nms"]


def _to_host(x: Any, op: str, name: str) -> tuple[numpy.ndarray, bool]:
    is_t = isinstance(x, Tensor)
    a = x.array if is_t else x
    if hasattr(a, "get"):  # CuPy -> host: NMS is a sequential loop
        a = a.get()
    return numpy.asarray(a), is_t


def _nms_numpy(b: numpy.ndarray, order: numpy.ndarray, thr: float) -> numpy.ndarray:
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = numpy.clip(numpy.minimum(b[i, 2], b[rest, 2]) - numpy.maximum(b[i, 0], b[rest, 0]), 0, None)
        h = numpy.clip(numpy.minimum(b[i, 3], b[rest, 3]) - numpy.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = numpy.where(union > 0, inter / numpy.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= thr]
    return numpy.asarray(keep, dtype=numpy.int64)


def _nms_loop(x1: numpy.ndarray, y1: numpy.ndarray, x2: numpy.ndarray, y2: numpy.ndarray,
              thr: float) -> numpy.ndarray:  # pragma: no cover - jitted
    """Greedy NMS over boxes already sorted by decreasing score; returns positions in that order.

    The inner loop is branch-free (the suppression flag is OR-ed in, whether or not the box is already
    suppressed) so that LLVM vectorises it; that is 3x faster than skipping suppressed boxes.
    """
    n = x1.shape[0]
    zero = x1.dtype.type(0)
    t = x1.dtype.type(thr)
    t1 = x1.dtype.type(1) + t
    area = (x2 - x1) * (y2 - y1)
    suppressed = numpy.zeros(n, dtype=numpy.uint8)
    keep = numpy.empty(n, dtype=numpy.int64)
    nk = 0
    for k in range(n):
        if suppressed[k]:
            continue
        keep[nk] = k
        nk += 1
        ax1, ay1, ax2, ay2 = x1[k], y1[k], x2[k], y2[k]
        ta = t * area[k]
        for m in range(k + 1, n):
            w = max(min(ax2, x2[m]) - max(ax1, x1[m]), zero)
            h = max(min(ay2, y2[m]) - max(ay1, y1[m]), zero)
            inter = w * h
            # IoU > t  <=>  inter > t (a + b - inter)  <=>  inter (1 + t) > t a + t b: no division
            suppressed[m] |= numpy.uint8(inter * t1 > ta + t * area[m])
    return keep[:nk]


if _HAVE_NUMBA:
    _nms_loop = numba.njit(cache=True, nogil=True, fastmath=False)(_nms_loop)


def _check(b: numpy.ndarray, s: numpy.ndarray, op: str) -> None:
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{op}: boxes must have shape (N, 4), got {tuple(b.shape)}")
    if s.ndim != 1 or s.shape[0] != b.shape[0]:
        raise ValueError(f"{op}: scores must have shape (N,) = ({b.shape[0]},), got {tuple(s.shape)}")
    if b.size and not numpy.isfinite(b).all():
        raise ValueError(f"{op}: boxes contain NaN or infinite coordinates")
    if s.size and numpy.isnan(s).any():
        raise ValueError(f"{op}: scores contain NaN")


def _result(keep: numpy.ndarray, as_tensor: bool) -> Any:
    return Tensor(keep) if as_tensor else keep


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Indices (int64) of the boxes greedy NMS keeps, by decreasing score.

    ``boxes (N, 4)`` as ``[x1, y1, x2, y2]``, ``scores (N,)``; a box is dropped if a higher-scored kept box
    has IoU > ``iou_threshold`` with it. Array in, array out; Tensor in, Tensor out.
    """
    b, t1 = _to_host(boxes, "nms", "boxes")
    s, t2 = _to_host(scores, "nms", "scores")
    _check(b, s, "nms")
    if b.shape[0] == 0:
        return _result(numpy.zeros(0, dtype=numpy.int64), t1 or t2)
    order = numpy.argsort(-s.astype(numpy.float64), kind="stable").astype(numpy.int64)
    if not _HAVE_NUMBA:
        return _result(_nms_numpy(b.astype(numpy.float64), order, float(iou_threshold)), t1 or t2)
    # float32 doubles the SIMD width; it is exact enough for pixel coordinates (a decision can only differ
    # for an IoU within ~1e-6 of the threshold). Huge coordinates (shifted batched_nms) use float64.
    dtype = numpy.float32 if b.dtype != numpy.float64 or numpy.abs(b).max() < 2.0**14 else numpy.float64
    sb = numpy.ascontiguousarray(b[order].T, dtype=dtype)
    keep = _nms_loop(sb[0], sb[1], sb[2], sb[3], float(iou_threshold))
    return _result(order[keep], t1 or t2)


def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
    """NMS done independently per category ``idxs (N,)``: boxes of different categories never suppress
    each other. Returns the kept indices sorted by decreasing score.

    As torchvision does, each category's boxes are shifted by ``idx * (max coordinate + 1)`` so that boxes
    of two categories cannot overlap, and one NMS runs over all of them.
    """
    b, t1 = _to_host(boxes, "batched_nms", "boxes")
    s, t2 = _to_host(scores, "batched_nms", "scores")
    c, _ = _to_host(idxs, "batched_nms", "idxs")
    _check(b, s, "batched_nms")
    if c.shape != s.shape:
        raise ValueError(f"batched_nms: idxs must have shape {tuple(s.shape)}, got {tuple(c.shape)}")
    if b.shape[0] == 0:
        return _result(numpy.zeros(0, dtype=numpy.int64), t1 or t2)
    b = b.astype(numpy.float64)
    # Shift relative to the minimum too, so negative coordinates cannot bring two categories together.
    lo = b.min()
    offset = (c.astype(numpy.float64) * (b.max() - lo + 1.0))[:, None]
    return _result(nms(b - lo + offset, s, iou_threshold), t1 or t2)
