"""Felzenszwalb & Huttenlocher (2004): efficient graph-based image segmentation, as scikit-image runs it.

The image (scaled to [0, 1] if it is an integer image) is smoothed by a Gaussian of ``sigma``; every pixel
is a node, joined to its 8 neighbours by edges weighted by the Euclidean colour distance. Edges are visited
by increasing weight (Kruskal); the components C1, C2 of an edge of weight w merge if

    w < min(Int(C1) + k / |C1|,  Int(C2) + k / |C2|),    Int(C) = largest edge weight inside C

(``k = scale / 255``: scikit-image's rescaling, so that ``scale`` means what it means for 0..255 pixels).
A second pass over the same sorted edges merges every component smaller than ``min_size`` with its
neighbour. Components are kept in a union-find forest whose roots are the smallest pixel index (the same
forest as scikit-image's), so the labels equal ``skimage.segmentation.felzenszwalb``'s for the same
parameters; the test checks this. The union-find loop runs in numba; the edge weights and their sort in
NumPy/SciPy with exactly scikit-image's expressions (the sort is not stable, so its order must match).
"""

from __future__ import annotations

import numpy
from scipy import ndimage

try:
    import numba

    _njit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover
    def _njit(f):  # type: ignore[no-redef]
        return f

__all__ = ["felzenszwalb"]


@_njit
def _find_root(forest: numpy.ndarray, n: int) -> int:  # pragma: no cover - jitted
    root = n
    while forest[root] < root:
        root = forest[root]
    return root


@_njit
def _set_root(forest: numpy.ndarray, n: int, root: int) -> None:  # pragma: no cover - jitted
    while forest[n] < n:
        j = forest[n]
        forest[n] = root
        n = j
    forest[n] = root


@_njit
def _join(forest: numpy.ndarray, n: int, m: int) -> None:  # pragma: no cover - jitted
    if n != m:
        root = _find_root(forest, n)
        root_m = _find_root(forest, m)
        if root > root_m:
            root = root_m
        _set_root(forest, n, root)
        _set_root(forest, m, root)


@_njit
def _segment(edges: numpy.ndarray, costs: numpy.ndarray, n: int, k: float,
             min_size: int) -> numpy.ndarray:  # pragma: no cover - jitted
    forest = numpy.arange(n)
    size = numpy.ones(n, dtype=numpy.int64)
    cint = numpy.zeros(n)
    for e in range(costs.shape[0]):
        s0 = _find_root(forest, edges[e, 0])
        s1 = _find_root(forest, edges[e, 1])
        if s0 == s1:
            continue
        if costs[e] < min(cint[s0] + k / size[s0], cint[s1] + k / size[s1]):
            _join(forest, s0, s1)
            new = _find_root(forest, s0)
            size[new] = size[s0] + size[s1]
            cint[new] = costs[e]
    for e in range(costs.shape[0]):  # remove components smaller than min_size
        s0 = _find_root(forest, edges[e, 0])
        s1 = _find_root(forest, edges[e, 1])
        if s0 == s1:
            continue
        if size[s0] < min_size or size[s1] < min_size:
            _join(forest, s0, s1)
            new = _find_root(forest, s0)
            size[new] = size[s0] + size[s1]
    for i in range(n):  # flatten: every pixel points at its root
        forest[i] = _find_root(forest, i)
    return forest


def _as_float(image: numpy.ndarray) -> numpy.ndarray:
    """scikit-image's ``img_as_float``: integers to [0, 1] (unsigned by their max, signed to [-1, 1])."""
    a = numpy.asarray(image)
    if a.dtype.kind == "u":
        return a.astype(numpy.float64) / numpy.iinfo(a.dtype).max
    if a.dtype.kind == "i":
        return numpy.maximum(a.astype(numpy.float64) / numpy.iinfo(a.dtype).max, -1.0)
    if a.dtype == bool:
        return a.astype(numpy.float64)
    return a.astype(numpy.float64) if a.dtype != numpy.float32 else a


def felzenszwalb(image: numpy.ndarray, scale: float = 1, sigma: float = 0.8, min_size: int = 20) -> numpy.ndarray:
    """Segment labels ``int64 (H, W)`` in ``0..n-1`` (ordered by each segment's first pixel) of an
    ``(H, W)`` or ``(H, W, C)`` image; the parameters as scikit-image's ``felzenszwalb``."""
    img = numpy.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"felzenszwalb: expected an (H, W) or (H, W, C) image, got shape {numpy.shape(image)}")
    if not numpy.isfinite(scale) or scale < 0 or sigma < 0:
        raise ValueError(f"felzenszwalb: scale and sigma must be >= 0, got scale={scale}, sigma={sigma}")
    img = _as_float(img)
    k = float(scale) / 255.0
    img = ndimage.gaussian_filter(img, sigma=[sigma, sigma, 0])
    H, W = img.shape[:2]

    def dist(a: numpy.ndarray, b: numpy.ndarray) -> numpy.ndarray:
        return numpy.sqrt(numpy.sum((a - b) * (a - b), axis=-1))

    down = dist(img[1:, :, :], img[:H - 1, :, :])
    right = dist(img[:, 1:, :], img[:, :W - 1, :])
    dright = dist(img[1:, 1:, :], img[:H - 1, :W - 1, :])
    uright = dist(img[1:, :W - 1, :], img[:H - 1, 1:, :])
    costs = numpy.hstack([right.ravel(), down.ravel(), dright.ravel(), uright.ravel()]).astype(float)
    seg = numpy.arange(W * H, dtype=numpy.intp).reshape(H, W)
    edges = numpy.vstack([
        numpy.c_[seg[:, 1:].ravel(), seg[:, :W - 1].ravel()],
        numpy.c_[seg[1:, :].ravel(), seg[:H - 1, :].ravel()],
        numpy.c_[seg[1:, 1:].ravel(), seg[:H - 1, :W - 1].ravel()],
        numpy.c_[seg[:H - 1, 1:].ravel(), seg[1:, :W - 1].ravel()],
    ])
    order = numpy.argsort(costs)  # NumPy's default (unstable) sort, as scikit-image: ties keep its order
    edges = numpy.ascontiguousarray(edges[order]).astype(numpy.int64)
    costs = numpy.ascontiguousarray(costs[order])
    roots = _segment(edges, costs, H * W, k, int(min_size))
    return numpy.unique(roots, return_inverse=True)[1].reshape(H, W).astype(numpy.int64)
