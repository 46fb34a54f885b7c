"""Binary instance masks: COCO run-length encoding (RLE), boxes from masks, mask IoU, pasting masks.

COCO's RLE (``pycocotools.mask``) reads the mask in column-major (Fortran) order and stores the lengths of
alternating runs of 0s and 1s, starting with 0s (a first run of length 0 if the mask starts with a 1). The
compressed form (``counts`` as a string) writes each count, minus the count two places before it (from the
third on), as a little-endian base-32 varint with a sign bit, 5 bits a character offset by 48 ('0').
This module writes and reads that exact format, so ``pycocotools`` reads the JSON the scenes export and
vice versa.
"""

from __future__ import annotations

from typing import Any

import numpy

__all__ = ["encode_rle", "decode_rle", "rle_area", "rle_to_string", "rle_from_string", "mask_to_box",
           "mask_iou", "paste_mask_in_image"]


def _runs(mask: numpy.ndarray) -> list[int]:
    flat = numpy.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = numpy.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = numpy.concatenate([[0], change, [flat.size]])
    counts = numpy.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts  # runs start with zeros
    return counts


def rle_to_string(counts: list[int]) -> str:
    """COCO's compressed string of run lengths (``rleToString`` in pycocotools' ``maskApi.c``)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_from_string(s: str | bytes) -> list[int]:
    """Inverse of :func:`rle_to_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("rle_from_string: truncated RLE string")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"rle_from_string: invalid character {s[p]!r} in RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: numpy.ndarray, compressed: bool = True) -> dict[str, Any]:
    """``{"size": [h, w], "counts": str}`` (or a list of ints with ``compressed=False``) for one
    ``(h, w)`` binary mask; the same bytes as ``pycocotools.mask.encode``."""
    m = numpy.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"encode_rle: mask must be 2-D (h, w), got shape {m.shape}")
    counts = _runs(m)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": rle_to_string(counts) if compressed else counts}


def _counts(rle: dict[str, Any]) -> list[int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("decode_rle: expected a dict with 'size' and 'counts'")
    c = rle["counts"]
    return rle_from_string(c) if isinstance(c, (str, bytes)) else [int(v) for v in c]


def decode_rle(rle: dict[str, Any]) -> numpy.ndarray:
    """The ``(h, w)`` bool mask of an RLE dict (compressed string or uncompressed list of counts)."""
    h, w = (int(v) for v in rle["size"]) if isinstance(rle, dict) and "size" in rle else (None, None)
    counts = _counts(rle)
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"decode_rle: run lengths sum to {sum(counts)} (or are negative), expected h*w = {h * w}")
    vals = numpy.zeros(len(counts), dtype=bool)
    vals[1::2] = True
    flat = numpy.repeat(vals, counts)
    return flat.reshape((w, h)).T.copy()


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels (the sum of the odd runs)."""
    return int(sum(_counts(rle)[1::2]))


def mask_to_box(mask: numpy.ndarray) -> numpy.ndarray:
    """``[x1, y1, x2, y2]`` (float64, continuous: the box covers pixels x1..x2-1) of a non-empty mask;
    all zeros for an empty one (COCO's ``toBbox`` convention, as ``[x, y, w, h]`` there)."""
    m = numpy.asarray(mask, dtype=bool)
    ys = numpy.flatnonzero(m.any(1))
    xs = numpy.flatnonzero(m.any(0))
    if ys.size == 0:
        return numpy.zeros(4)
    return numpy.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=numpy.float64)


def mask_iou(masks1: numpy.ndarray, masks2: numpy.ndarray) -> numpy.ndarray:
    """Pairwise IoU of binary masks ``(N, H, W), (M, H, W) -> (N, M)``; 0 when both are empty."""
    a = numpy.asarray(masks1, dtype=bool)
    b = numpy.asarray(masks2, dtype=bool)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou: expected (N, H, W) and (M, H, W) masks, got {a.shape} and {b.shape}")
    fa = a.reshape(a.shape[0], -1).astype(numpy.float64)
    fb = b.reshape(b.shape[0], -1).astype(numpy.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return numpy.where(union > 0, inter / numpy.maximum(union, 1), 0.0)


def _interp_matrix(n_out: int, start: float, length: float, m: int) -> numpy.ndarray:
    """``(n_out, m + 2)`` bilinear weights from the ``m`` cells of a mask spanning ``[start, start + length)``
    (zero-padded by one cell on each side) to the pixel centres ``p + 0.5``, ``p = 0 .. n_out - 1``."""
    cell = length / m
    u = (numpy.arange(n_out) + 0.5 - start) / cell - 0.5 + 1.0  # continuous index into the padded mask
    u = numpy.clip(u, 0.0, m + 1.0)
    i0 = numpy.minimum(numpy.floor(u).astype(numpy.int64), m)
    f = u - i0
    w = numpy.zeros((n_out, m + 2))
    rows = numpy.arange(n_out)
    w[rows, i0] += 1.0 - f
    w[rows, i0 + 1] += f
    return w


def paste_mask_in_image(mask: numpy.ndarray, box: numpy.ndarray, height: int, width: int,
                        threshold: float = 0.5) -> numpy.ndarray:
    """Paste a soft ``(m, m)`` mask predicted for ``box = [x1, y1, x2, y2]`` into an ``(height, width)``
    image (Mask R-CNN's test-time step): the mask's cell ``(i, j)`` is centred at
    ``(x1 + (j + 0.5) w / m, y1 + (i + 0.5) h / m)``, exactly where ``roi_align(aligned=True)`` sampled the
    training target, and pixel ``(y, x)`` (centre ``(x + 0.5, y + 0.5)``) takes the bilinear interpolation
    of the mask padded with one cell of zeros (so it fades to 0 just outside the box, as torchvision's
    ``paste_masks_in_image``), then ``>= threshold``. Separable: ``P = W_y M W_x^T`` with ``(rows, m + 2)``
    interpolation matrices, computed only over the box's pixel extent (one cell of margin).
    Returns a bool ``(height, width)`` mask."""
    m = numpy.asarray(mask, dtype=numpy.float64)
    if m.ndim != 2:
        raise ValueError(f"paste_mask_in_image: mask must be (m, m), got {m.shape}")
    x1, y1, x2, y2 = (float(v) for v in box)
    out = numpy.zeros((height, width), dtype=bool)
    bw, bh = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    # pixels whose centre can see a non-zero interpolated value: within one cell of the box
    xa = max(int(numpy.floor(x1 - bw / m.shape[1])), 0)
    xb = min(int(numpy.ceil(x2 + bw / m.shape[1])), width)
    ya = max(int(numpy.floor(y1 - bh / m.shape[0])), 0)
    yb = min(int(numpy.ceil(y2 + bh / m.shape[0])), height)
    if xb <= xa or yb <= ya:
        return out
    pad = numpy.pad(m, 1)
    wy = _interp_matrix(yb - ya, y1 - ya, bh, m.shape[0])
    wx = _interp_matrix(xb - xa, x1 - xa, bw, m.shape[1])
    out[ya:yb, xa:xb] = (wy @ pad @ wx.T) >= threshold
    return out
