"""Box utilities with ``torchvision.ops`` names: area, pairwise IoU, format conversion, clipping, filtering,
and the R-CNN box coding (the ``t_x, t_y, t_w, t_h`` offsets) with its usual normalisation.

Boxes are ``(N, 4)`` arrays ``[x1, y1, x2, y2]`` in continuous pixel coordinates (torchvision's and
ChainerCV's convention in newer code: a box covering pixels 0..9 is ``[0, 0, 10, 10]``, width ``x2 - x1``,
no ``+1``). Every function takes a NumPy/CuPy array or a ``Tensor`` and answers in the same kind; none of
them records gradients (the detectors train on encoded targets, never through these functions).

Box coding (Girshick et al. 2014, appendix C), for a proposal P = (P_x, P_y, P_w, P_h) (centre, size) and
its target box G::

    t_x = (G_x - P_x) / P_w      t_y = (G_y - P_y) / P_h
    t_w = log(G_w / P_w)         t_h = log(G_h / P_h)

normalised as ``(t - mean) / std`` (Fast R-CNN's ``BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)``, the same as
torchvision's ``BoxCoder(weights=(10, 10, 5, 5))``: weight = 1 / std).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor

__all__ = [
    "box_area", "box_iou", "box_convert", "clip_boxes_to_image", "remove_small_boxes", "encode_boxes",
    "decode_boxes", "BoxCoder", "check_boxes", "BBOX_XFORM_CLIP",
]

# Largest log-scale a decoded width/height may take: exp(4.135) = 62.5 = 1000 / 16 (torchvision's clip),
# so a wild regression output cannot overflow exp().
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _unwrap(x: Any, op: str) -> tuple[Any, bool]:
    if isinstance(x, Tensor):
        return x.array, True
    xp = get_array_module(x)
    if isinstance(x, xp.ndarray):
        return x, False
    try:
        return numpy.asarray(x, dtype=numpy.float64), False
    except (TypeError, ValueError) as e:
        raise TypeError(f"{op}: expected boxes as an array or Tensor, got {type(x).__name__}") from e


def _wrap(a: Any, as_tensor: bool) -> Any:
    return Tensor(a) if as_tensor else a


def _check4(a: Any, op: str, name: str = "boxes") -> None:
    if a.ndim < 1 or a.shape[-1] != 4:
        raise ValueError(f"{op}: {name} must have shape (..., 4), got {tuple(a.shape)}")


def check_boxes(boxes: Any, op: str = "check_boxes", name: str = "boxes") -> None:
    """Raise ``ValueError`` naming ``op`` if ``boxes`` is not ``(N, 4)`` finite ``x1 <= x2, y1 <= y2``."""
    a, _ = _unwrap(boxes, op)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (N, 4), got {tuple(a.shape)}")
    a = numpy.asarray(a.get() if hasattr(a, "get") else a)
    if a.size and not numpy.isfinite(a).all():
        i = int(numpy.argwhere(~numpy.isfinite(a))[0, 0])
        raise ValueError(f"{op}: {name}[{i}] = {a[i].tolist()} has a NaN or infinite coordinate")
    bad = numpy.flatnonzero((a[:, 2] < a[:, 0]) | (a[:, 3] < a[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{op}: {name}[{i}] = {a[i].tolist()} has x2 < x1 or y2 < y1 ({bad.size} such boxes; "
                         "expected [x1, y1, x2, y2])")


def box_area(boxes: Any) -> Any:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box: ``(N, 4) -> (N,)``."""
    a, t = _unwrap(boxes, "box_area")
    _check4(a, "box_area")
    return _wrap((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), t)


def _iou(a: Any, b: Any) -> Any:
    xp = get_array_module(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = xp.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2) top-left of the intersection
    rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = xp.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    # Two empty boxes have union 0: their IoU is 0, not NaN.
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return xp.where(union > 0, inter / xp.where(union > 0, union, 1), 0.0)


def box_iou(boxes1: Any, boxes2: Any) -> Any:
    """Pairwise intersection over union: ``(N, 4), (M, 4) -> (N, M)``.

    ``IoU(A, B) = |A n B| / (|A| + |B| - |A n B|)``, vectorised over all pairs (no Python loop); 0 for two
    empty boxes.
    """
    a, t1 = _unwrap(boxes1, "box_iou")
    b, t2 = _unwrap(boxes2, "box_iou")
    if a.ndim != 2 or a.shape[1] != 4 or b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"box_iou: expected boxes1 (N, 4) and boxes2 (M, 4), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return _wrap(_iou(a, b), t1 or t2)


_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_convert(boxes: Any, in_fmt: str, out_fmt: str) -> Any:
    """Convert between ``'xyxy'`` (corners), ``'xywh'`` (top-left + size, COCO) and ``'cxcywh'`` (centre + size)."""
    a, t = _unwrap(boxes, "box_convert")
    _check4(a, "box_convert")
    for f in (in_fmt, out_fmt):
        if f not in _FORMATS:
            raise ValueError(f"box_convert: unknown format {f!r}; expected one of {_FORMATS}")
    xp = get_array_module(a)
    if in_fmt == out_fmt:
        return _wrap(a.copy(), t)
    if in_fmt == "xywh":
        xyxy = xp.concatenate([a[..., :2], a[..., :2] + a[..., 2:]], axis=-1)
    elif in_fmt == "cxcywh":
        xyxy = xp.concatenate([a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2], axis=-1)
    else:
        xyxy = a
    if out_fmt == "xywh":
        out = xp.concatenate([xyxy[..., :2], xyxy[..., 2:] - xyxy[..., :2]], axis=-1)
    elif out_fmt == "cxcywh":
        out = xp.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], axis=-1)
    else:
        out = xyxy.copy()
    return _wrap(out, t)


def clip_boxes_to_image(boxes: Any, size: tuple[int, int]) -> Any:
    """Clip boxes to an image of ``size = (height, width)``: x to ``[0, width]``, y to ``[0, height]``."""
    a, t = _unwrap(boxes, "clip_boxes_to_image")
    _check4(a, "clip_boxes_to_image")
    if len(size) != 2:
        raise ValueError(f"clip_boxes_to_image: size must be (height, width), got {size}")
    h, w = size
    xp = get_array_module(a)
    out = a.copy()
    out[..., 0::2] = xp.clip(a[..., 0::2], 0, w)
    out[..., 1::2] = xp.clip(a[..., 1::2], 0, h)
    return _wrap(out, t)


def remove_small_boxes(boxes: Any, min_size: float) -> Any:
    """Indices (int64, increasing) of the boxes whose width and height are both at least ``min_size``."""
    a, t = _unwrap(boxes, "remove_small_boxes")
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"remove_small_boxes: boxes must have shape (N, 4), got {tuple(a.shape)}")
    xp = get_array_module(a)
    keep = (a[:, 2] - a[:, 0] >= min_size) & (a[:, 3] - a[:, 1] >= min_size)
    return _wrap(xp.flatnonzero(keep).astype(xp.int64), t)


def _norm(v: Sequence[float] | None, default: float, xp: Any, dtype: Any) -> Any:
    return xp.asarray([default] * 4 if v is None else list(v), dtype=dtype)


def encode_boxes(reference_boxes: Any, proposals: Any, means: Sequence[float] | None = None,
                 stds: Sequence[float] | None = None) -> Any:
    """Offsets ``(t - means) / stds`` that move each proposal onto its reference (ground-truth) box.

    ``reference_boxes, proposals: (N, 4) -> (N, 4)`` (torchvision's ``encode_boxes`` argument order). Both
    must have positive width and height. ``means`` defaults to 0 and ``stds`` to 1 (raw offsets).
    """
    g, t1 = _unwrap(reference_boxes, "encode_boxes")
    p, t2 = _unwrap(proposals, "encode_boxes")
    if g.shape != p.shape or g.ndim != 2 or g.shape[1] != 4:
        raise ValueError(f"encode_boxes: reference_boxes and proposals must both be (N, 4), got "
                         f"{tuple(g.shape)} and {tuple(p.shape)}")
    xp = get_array_module(g, p)
    dtype = numpy.result_type(g.dtype, p.dtype, numpy.float32)
    g = g.astype(dtype, copy=False)
    p = p.astype(dtype, copy=False)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    if g.shape[0] and (bool((pw <= 0).any()) or bool((ph <= 0).any()) or bool((gw <= 0).any())
                       or bool((gh <= 0).any())):
        raise ValueError("encode_boxes: every box needs a positive width and height (log of a zero size)")
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    gx, gy = g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    t = xp.stack([(gx - px) / pw, (gy - py) / ph, xp.log(gw / pw), xp.log(gh / ph)], axis=1)
    t = (t - _norm(means, 0.0, xp, dtype)) / _norm(stds, 1.0, xp, dtype)
    return _wrap(t, t1 or t2)


def decode_boxes(rel_codes: Any, boxes: Any, means: Sequence[float] | None = None,
                 stds: Sequence[float] | None = None, bbox_xform_clip: float = BBOX_XFORM_CLIP) -> Any:
    """Inverse of :func:`encode_boxes`: apply offsets ``rel_codes (N, 4)`` (or ``(N, 4k)``, k boxes per row,
    e.g. one per class) to ``boxes (N, 4)``; returns boxes of the shape of ``rel_codes``.

    ``t = codes * stds + means``; ``G_x = P_x + P_w t_x``, ``G_w = P_w exp(min(t_w, bbox_xform_clip))``.
    """
    d, t1 = _unwrap(rel_codes, "decode_boxes")
    p, t2 = _unwrap(boxes, "decode_boxes")
    if d.ndim != 2 or d.shape[1] % 4 or p.ndim != 2 or p.shape[1] != 4 or d.shape[0] != p.shape[0]:
        raise ValueError(f"decode_boxes: expected rel_codes (N, 4k) and boxes (N, 4), got {tuple(d.shape)} and "
                         f"{tuple(p.shape)}")
    xp = get_array_module(d, p)
    dtype = numpy.result_type(d.dtype, p.dtype, numpy.float32)
    n, k = d.shape[0], d.shape[1] // 4
    d = d.astype(dtype, copy=False).reshape(n, k, 4)
    d = d * _norm(stds, 1.0, xp, dtype) + _norm(means, 0.0, xp, dtype)
    p = p.astype(dtype, copy=False)
    pw, ph = (p[:, 2] - p[:, 0])[:, None], (p[:, 3] - p[:, 1])[:, None]
    px, py = p[:, 0][:, None] + 0.5 * pw, p[:, 1][:, None] + 0.5 * ph
    cx, cy = px + d[..., 0] * pw, py + d[..., 1] * ph
    w = pw * xp.exp(xp.minimum(d[..., 2], bbox_xform_clip))
    h = ph * xp.exp(xp.minimum(d[..., 3], bbox_xform_clip))
    out = xp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=2).reshape(n, 4 * k)
    return _wrap(out, t1 or t2)


class BoxCoder:
    """torchvision's ``BoxCoder(weights)``: the coding above with ``stds = 1 / weights``, ``means = 0``.

    ``BoxCoder((10, 10, 5, 5))`` is Fast/Faster R-CNN's head normalisation; ``(1, 1, 1, 1)`` its RPN's.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = BBOX_XFORM_CLIP) -> None:
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(f"BoxCoder: weights must be 4 positive numbers, got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.stds = tuple(1.0 / w for w in self.weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: Any, proposals: Any) -> Any:
        return encode_boxes(reference_boxes, proposals, stds=self.stds)

    def decode(self, rel_codes: Any, boxes: Any) -> Any:
        return decode_boxes(rel_codes, boxes, stds=self.stds, bbox_xform_clip=self.bbox_xform_clip)
