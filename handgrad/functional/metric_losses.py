"""Distances and the losses of deep metric learning: contrastive (pair) and triplet-margin losses.

A metric-learning network phi maps inputs to embeddings; the losses act on distances d(phi(x_i), phi(x_j))
(the deck's notation, with the margin tau written ``margin``):

* contrastive (pair-wise ranking) loss, for a pair labelled similar (s = 1) or dissimilar (s = 0)::

      L_c = s * d + (1 - s) * max(0, margin - d)          (squared=True: s * d^2 + (1 - s) * max(0, margin - d)^2)

* triplet loss, for an anchor a, a positive p (same class) and a negative n (another class)::

      L_3 = max(0, d(a, p) - d(a, n) + margin)

Distances: ``"euclidean"`` ||u - v||_2, ``"sqeuclidean"`` ||u - v||_2^2 and ``"cosine"`` 1 - u.v / (|u| |v|),
row-wise (:func:`distance`, :func:`pairwise_distance` with PyTorch's eps convention) or for every pair of
rows (:func:`distance_matrix`, :func:`cdist`). Every op is a ``Function`` with a hand-written backward.
"""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.ops.arithmetic import minimum
from handgrad.engine.tensor import Tensor
from handgrad.functional._reduction import check_reduction, reduce_loss, reduce_loss_backward

METRICS = ("euclidean", "sqeuclidean", "cosine")


# -- validation ------------------------------------------------------------------------------------------------
def _check_tensor(op: str, name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating, got dtype {x.dtype}")
    return x


def _check_pair(op: str, x1: Any, x2: Any, names: tuple[str, str] = ("x1", "x2")) -> None:
    _check_tensor(op, names[0], x1)
    _check_tensor(op, names[1], x2)
    if x1.shape != x2.shape:
        raise ValueError(f"{op}: {names[0]} {x1.shape} and {names[1]} {x2.shape} must have the same shape")
    if x1.ndim not in (1, 2):
        raise ValueError(f"{op}: expected (D,) or (N, D) embeddings, got {names[0]} of shape {x1.shape}")
    if x1.dtype != x2.dtype:
        raise TypeError(f"{op}: {names[0]} is {x1.dtype} but {names[1]} is {x2.dtype}; cast one with .to()")


def _check_metric(op: str, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"{op}: unknown metric {metric!r}; expected one of {METRICS}")


# -- row-wise distances --------------------------------------------------------------------------------------------
class PairwiseDistanceFunction(Function):
    """d = ||x1 - x2 + eps||_p over the last axis (PyTorch's ``pairwise_distance``).

    Shapes: x1, x2 (..., D) -> d (...) (or (..., 1) with keepdim). With u = x1 - x2 + eps,
    dd/du_k = |u_k|^(p-1) sign(u_k) / d^(p-1); for p = 2 that is u / d. Where d = 0 the subgradient 0 is used.
    """

    def __init__(self, p: float, eps: float, keepdim: bool) -> None:
        self.p, self.eps, self.keepdim = float(p), float(eps), keepdim

    def forward(self, x1: Any, x2: Any) -> Any:
        xp = get_array_module(x1)
        u = x1 - x2 + self.eps
        p = self.p
        if p == 2.0:
            d = xp.sqrt((u * u).sum(axis=-1, keepdims=True))
        elif p == 1.0:
            d = xp.abs(u).sum(axis=-1, keepdims=True)
        else:
            d = (xp.abs(u) ** p).sum(axis=-1, keepdims=True) ** (1.0 / p)
        self.u, self.d = u, d
        return d if self.keepdim else d[..., 0]

    def backward(self, gd: Any) -> Any:
        xp = get_array_module(gd)
        if not self.keepdim:
            gd = gd[..., None]
        u, d, p = self.u, self.d, self.p
        safe = xp.where(d > 0, d, 1)
        if p == 2.0:
            gu = gd * u / safe
        elif p == 1.0:
            gu = gd * xp.sign(u)
        else:
            gu = gd * xp.sign(u) * xp.abs(u) ** (p - 1) / safe ** (p - 1)
        gu = xp.where(d > 0, gu, 0)
        n = self.needs_input_grad
        return (gu if n[0] else None, -gu if n[1] else None)


class RowDistanceFunction(Function):
    """d_i = dist(x1_i, x2_i) for ``metric`` in euclidean / sqeuclidean / cosine.  x1, x2 (N, D) -> d (N,).

    sqeuclidean: d = |u|^2, u = x1 - x2, dd/dx1 = 2u.   euclidean: d = |u|, dd/dx1 = u / d (0 at d = 0).
    cosine: d = 1 - c, c = x1.x2 / (|x1| |x2|);  dc/dx1 = x2 / (|x1||x2|) - c x1 / |x1|^2 (and symmetrically).
    """

    def __init__(self, metric: str, eps: float) -> None:
        self.metric, self.eps = metric, eps

    def forward(self, x1: Any, x2: Any) -> Any:
        xp = get_array_module(x1)
        if self.metric == "cosine":
            n1 = xp.maximum(xp.sqrt((x1 * x1).sum(-1)), self.eps)
            n2 = xp.maximum(xp.sqrt((x2 * x2).sum(-1)), self.eps)
            c = (x1 * x2).sum(-1) / (n1 * n2)
            self.x1, self.x2, self.n1, self.n2, self.c = x1, x2, n1, n2, c
            return 1.0 - c
        u = x1 - x2
        sq = (u * u).sum(-1)
        self.u = u
        if self.metric == "sqeuclidean":
            return sq
        self.d = xp.sqrt(sq)
        return self.d

    def backward(self, gd: Any) -> Any:
        xp = get_array_module(gd)
        n = self.needs_input_grad
        g = gd[..., None]
        if self.metric == "cosine":
            x1, x2, n1, n2, c = self.x1, self.x2, self.n1[..., None], self.n2[..., None], self.c[..., None]
            # d = 1 - c, so the gradient is minus dc/dx
            g1 = -g * (x2 / (n1 * n2) - c * x1 / (n1 * n1))
            g2 = -g * (x1 / (n1 * n2) - c * x2 / (n2 * n2))
            return (g1 if n[0] else None, g2 if n[1] else None)
        if self.metric == "sqeuclidean":
            gu = 2.0 * g * self.u
        else:
            d = self.d[..., None]
            gu = xp.where(d > 0, g * self.u / xp.where(d > 0, d, 1), 0)
        return (gu if n[0] else None, -gu if n[1] else None)


class DistanceMatrixFunction(Function):
    """D_ij = dist(x_i, y_j) for every pair of rows.  x (N, K), y (M, K) -> D (N, M).

    Computed from the explicit differences (N, M, K), not |x|^2 + |y|^2 - 2 x.y, so D_ii is exactly 0 for
    y = x and no cancellation error creeps into the gradient. With U_ij = x_i - y_j and upstream G:
    sqeuclidean: gx_i = 2 sum_j G_ij U_ij, gy_j = -2 sum_i G_ij U_ij; euclidean: the same with G_ij / (2 D_ij)
    in place of G_ij (0 where D_ij = 0); cosine: D = 1 - xh yh^T with xh = x / |x|, so
    gxh = -G yh, gx = (gxh - xh (xh . gxh)) / |x| (and symmetrically for y).
    """

    def __init__(self, metric: str, eps: float) -> None:
        self.metric, self.eps = metric, eps

    def forward(self, x: Any, y: Any) -> Any:
        xp = get_array_module(x)
        if self.metric == "cosine":
            nx = xp.maximum(xp.sqrt((x * x).sum(-1, keepdims=True)), self.eps)
            ny = xp.maximum(xp.sqrt((y * y).sum(-1, keepdims=True)), self.eps)
            self.xh, self.yh, self.nx, self.ny = x / nx, y / ny, nx, ny
            return 1.0 - self.xh @ self.yh.T
        u = x[:, None, :] - y[None, :, :]
        sq = (u * u).sum(-1)
        self.u = u
        if self.metric == "sqeuclidean":
            return sq
        self.d = xp.sqrt(sq)
        return self.d

    def backward(self, g: Any) -> Any:
        xp = get_array_module(g)
        n = self.needs_input_grad
        if self.metric == "cosine":
            gxh = -g @ self.yh
            gyh = -g.T @ self.xh
            gx = (gxh - self.xh * (self.xh * gxh).sum(-1, keepdims=True)) / self.nx
            gy = (gyh - self.yh * (self.yh * gyh).sum(-1, keepdims=True)) / self.ny
            return (gx if n[0] else None, gy if n[1] else None)
        if self.metric == "sqeuclidean":
            w = 2.0 * g
        else:
            d = self.d
            w = xp.where(d > 0, g / xp.where(d > 0, d, 1), 0)
        wu = w[:, :, None] * self.u
        return (wu.sum(1) if n[0] else None, -wu.sum(0) if n[1] else None)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last dimension, as ``torch.nn.functional.pairwise_distance``.

    x1, x2: (N, D) or (D,)  ->  (N,) or () (a trailing 1 kept with ``keepdim``).
    """
    _check_pair("pairwise_distance", x1, x2)
    if not p > 0:
        raise ValueError(f"pairwise_distance: p must be positive, got {p}")
    return PairwiseDistanceFunction(p, eps, keepdim)(x1, x2)


def distance(x1: Tensor, x2: Tensor, metric: str = "euclidean", eps: float = 1e-8) -> Tensor:
    """Row-wise distance d_i = dist(x1_i, x2_i).  x1, x2: (N, D) -> (N,) (or (D,) -> ()).

    ``metric``: ``"euclidean"`` ||u - v||, ``"sqeuclidean"`` ||u - v||^2, ``"cosine"`` 1 - cos(u, v)
    (norms clamped below at ``eps``, as in ``torch.nn.functional.cosine_similarity``).
    """
    _check_pair("distance", x1, x2)
    _check_metric("distance", metric)
    return RowDistanceFunction(metric, eps)(x1, x2)


def euclidean_distance(x1: Tensor, x2: Tensor) -> Tensor:
    """Row-wise ||x1_i - x2_i||_2.  (N, D), (N, D) -> (N,)."""
    return distance(x1, x2, "euclidean")


def squared_euclidean_distance(x1: Tensor, x2: Tensor) -> Tensor:
    """Row-wise ||x1_i - x2_i||_2^2.  (N, D), (N, D) -> (N,)."""
    return distance(x1, x2, "sqeuclidean")


def cosine_distance(x1: Tensor, x2: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise 1 - x1_i.x2_i / (max(|x1_i|, eps) max(|x2_i|, eps)).  (N, D), (N, D) -> (N,)."""
    return distance(x1, x2, "cosine", eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x1.x2 / (max(|x1|, eps) max(|x2|, eps)) along the last dimension (``dim`` must name it)."""
    _check_pair("cosine_similarity", x1, x2)
    if dim % x1.ndim != x1.ndim - 1:
        raise ValueError(f"cosine_similarity: only the last dimension is supported, got dim={dim} for {x1.shape}")
    return 1.0 - RowDistanceFunction("cosine", eps)(x1, x2)


def distance_matrix(x: Tensor, y: Tensor | None = None, metric: str = "euclidean", eps: float = 1e-8) -> Tensor:
    """D_ij = dist(x_i, y_j) for all pairs of rows (y defaults to x).  x (N, K), y (M, K) -> D (N, M).

    The self-distance matrix ``distance_matrix(x)`` is what the miners in ``handgrad.metric`` consume; its
    diagonal is exactly 0 and the euclidean gradient there is the subgradient 0.
    """
    op = "distance_matrix"
    _check_metric(op, metric)
    _check_tensor(op, "x", x)
    y = x if y is None else _check_tensor(op, "y", y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"{op}: expected x (N, K) and y (M, K), got x {x.shape} and y {y.shape}")
    if x.dtype != y.dtype:
        raise TypeError(f"{op}: x is {x.dtype} but y is {y.dtype}; cast one with .to()")
    return DistanceMatrixFunction(metric, eps)(x, y)


def cdist(x1: Tensor, x2: Tensor, p: float = 2.0) -> Tensor:
    """``torch.cdist`` for 2-D inputs and p = 2: the Euclidean distance between every pair of rows."""
    if p != 2.0:
        raise ValueError(f"cdist: only p=2 is implemented, got p={p}")
    return distance_matrix(x1, x2, "euclidean")


# -- losses ------------------------------------------------------------------------------------------------------------
class ContrastiveFromDistanceFunction(Function):
    """Per-pair contrastive loss from the distance d (N,) and the similarity flags s (N,) in {0, 1}.

    plain:   L = s d + (1 - s) max(0, m - d);       dL/dd = s - (1 - s) [d < m]
    squared: L = s d^2 + (1 - s) max(0, m - d)^2;   dL/dd = 2 s d - 2 (1 - s) max(0, m - d)
    then reduced by ``reduction`` (mean / sum / none). ``s`` gets no gradient.
    """

    def __init__(self, margin: float, squared: bool, reduction: str) -> None:
        self.margin, self.squared, self.reduction = float(margin), squared, reduction

    def forward(self, d: Any, s: Any) -> Any:
        xp = get_array_module(d)
        s = s.astype(d.dtype)
        hinge = xp.maximum(self.margin - d, 0)
        if self.squared:
            loss = s * d * d + (1 - s) * hinge * hinge
        else:
            loss = s * d + (1 - s) * hinge
        self.d, self.s, self.hinge = d, s, hinge
        return reduce_loss(loss, self.reduction)

    def backward(self, g: Any) -> Any:
        g = reduce_loss_backward(g, self.d.shape, self.reduction)
        s, d, hinge = self.s, self.d, self.hinge
        if self.squared:
            gd = 2 * s * d - 2 * (1 - s) * hinge
        else:
            gd = s - (1 - s) * (hinge > 0)
        return g * gd, None


class TripletHingeFunction(Function):
    """L_i = max(0, margin + d_ap_i - d_an_i), then reduced;  dL/dd_ap = [L_i > 0], dL/dd_an = -[L_i > 0]."""

    def __init__(self, margin: float, reduction: str) -> None:
        self.margin, self.reduction = float(margin), reduction

    def forward(self, d_ap: Any, d_an: Any) -> Any:
        xp = get_array_module(d_ap)
        z = self.margin + d_ap - d_an
        self.active = z > 0
        self.shape = z.shape
        return reduce_loss(xp.where(self.active, z, 0), self.reduction)

    def backward(self, g: Any) -> Any:
        g = reduce_loss_backward(g, self.shape, self.reduction) * self.active
        n = self.needs_input_grad
        return (g if n[0] else None, -g if n[1] else None)


def _as_flags(op: str, similar: Any, n_rows: int, like: Tensor) -> Tensor:
    xp = get_array_module(like.array)
    s = similar.array if isinstance(similar, Tensor) else xp.asarray(similar)
    if s.shape != (n_rows,):
        raise ValueError(f"{op}: similar must have shape ({n_rows},) (one flag per pair), got {tuple(s.shape)}")
    if s.size and not bool(xp.isin(s, xp.asarray([0, 1])).all()):
        raise ValueError(f"{op}: similar must hold only 0/1 (or False/True), got values {sorted(set(s.tolist()))}")
    return Tensor._from_op(s.astype(like.dtype), None, 0)


def contrastive_loss(
    x1: Tensor,
    x2: Tensor,
    similar: Any,
    margin: float = 1.0,
    squared: bool = False,
    metric: str = "euclidean",
    reduction: str = "mean",
) -> Tensor:
    """Contrastive (pair-wise ranking) loss of a siamese network, as in the deck.

    x1, x2: (N, D) embeddings phi(x_i), phi(x_j) of N pairs; similar: (N,) 1 for a must-link pair, 0 for a
    cannot-link pair. With d = dist(x1_n, x2_n) (``metric``, euclidean by default)::

        L_n = s_n d_n + (1 - s_n) max(0, margin - d_n)                 (squared=False, the deck's form)
        L_n = s_n d_n^2 + (1 - s_n) max(0, margin - d_n)^2             (squared=True, Hadsell et al. 2006)

    reduced by ``reduction`` ('mean' | 'sum' | 'none' -> (N,)).
    """
    op = "contrastive_loss"
    _check_pair(op, x1, x2)
    _check_metric(op, metric)
    check_reduction(op, reduction)
    if x1.ndim != 2:
        raise ValueError(f"{op}: expected (N, D) embeddings, got x1 of shape {x1.shape}")
    if margin < 0:
        raise ValueError(f"{op}: margin must be >= 0, got {margin}")
    s = _as_flags(op, similar, x1.shape[0], x1)
    d = RowDistanceFunction(metric, 1e-8)(x1, x2)
    return ContrastiveFromDistanceFunction(margin, squared, reduction)(d, s)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Triplet margin loss with PyTorch's signature and numbers (``torch.nn.functional.triplet_margin_loss``).

    anchor, positive, negative: (N, D) (or (D,)). With d(u, v) = ||u - v + eps||_p::

        L_n = max(0, d(a_n, p_n) - d(a_n, n_n) + margin)

    ``swap=True`` replaces d(a, n) by min(d(a, n), d(p, n)) (Balntas et al. 2016). Reduced by ``reduction``.
    ``size_average`` / ``reduce`` are PyTorch's deprecated switches and are refused.
    """
    op = "triplet_margin_loss"
    if size_average is not None or reduce is not None:
        raise ValueError(f"{op}: size_average and reduce are deprecated in PyTorch; use reduction=")
    _check_pair(op, anchor, positive, ("anchor", "positive"))
    _check_pair(op, anchor, negative, ("anchor", "negative"))
    check_reduction(op, reduction)
    if not p > 0:
        raise ValueError(f"{op}: p must be positive, got {p}")
    d_ap = PairwiseDistanceFunction(p, eps, False)(anchor, positive)
    d_an = PairwiseDistanceFunction(p, eps, False)(anchor, negative)
    if swap:
        d_pn = PairwiseDistanceFunction(p, eps, False)(positive, negative)
        d_an = minimum(d_an, d_pn)
    return TripletHingeFunction(margin, reduction)(d_ap, d_an)


__all__ = [
    "METRICS", "cdist", "contrastive_loss", "cosine_distance", "cosine_similarity", "distance", "distance_matrix",
    "euclidean_distance", "pairwise_distance", "squared_euclidean_distance", "triplet_margin_loss",
]
