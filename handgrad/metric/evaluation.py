"""Retrieval and verification metrics for embeddings of classes never seen in training.

All take NumPy arrays (or Tensors) of embeddings (N, D) and integer labels (N,); every sample is a query
against all the others (leave-one-out), with the distance of ``handgrad.functional.distance_matrix``.

* recall@K (Song et al. 2016): the fraction of queries with at least one same-class sample among their K
  nearest neighbours.
* mAP@R (Musgrave et al. 2020): for a query with R same-class samples among the others, retrieve its R nearest
  neighbours and average the precision at each correct position: AP@R = (1/R) sum_{i<=R} P@i [rel_i].
* verification accuracy: pairs (i, j) are called "same" when D_ij <= threshold; the threshold is chosen on
  held-out pairs with :func:`best_threshold` (never on the pairs it is scored on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from handgrad.engine.tensor import Tensor


def _np(x: Any) -> numpy.ndarray:
    return x.numpy() if isinstance(x, Tensor) else numpy.asarray(x)


def _check(op: str, embeddings: Any, labels: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
    e, y = _np(embeddings), _np(labels)
    if e.ndim != 2 or y.ndim != 1 or len(e) != len(y):
        raise ValueError(f"{op}: expected embeddings (N, D) and labels (N,), got {e.shape} and {y.shape}")
    if len(y) < 2:
        raise ValueError(f"{op}: need at least 2 samples, got {len(y)}")
    return e, y


def pairwise_distances(embeddings: Any, metric: str = "euclidean") -> numpy.ndarray:
    """(N, N) distance matrix of NumPy embeddings (no graph): euclidean, sqeuclidean or cosine."""
    e = _np(embeddings).astype(numpy.float64)
    if metric == "cosine":
        u = e / numpy.maximum(numpy.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return 1.0 - u @ u.T
    sq = (e * e).sum(1)
    d2 = numpy.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0)
    numpy.fill_diagonal(d2, 0)
    if metric == "sqeuclidean":
        return d2
    if metric == "euclidean":
        return numpy.sqrt(d2)
    raise ValueError(f"pairwise_distances: unknown metric {metric!r}; expected euclidean, sqeuclidean or cosine")


def _neighbour_order(d: numpy.ndarray) -> numpy.ndarray:
    """Indices of the other samples sorted by distance, per query (self excluded; stable for ties)."""
    d = d.copy()
    numpy.fill_diagonal(d, numpy.inf)
    return numpy.argsort(d, axis=1, kind="stable")[:, :-1]


def recall_at_k(
    embeddings: Any, labels: Any, k: int | Sequence[int] = (1, 2, 4, 8), metric: str = "euclidean"
) -> dict[int, float]:
    """{K: recall@K}: the share of queries whose K nearest other samples include one of their class."""
    e, y = _check("recall_at_k", embeddings, labels)
    ks = [k] if isinstance(k, int) else list(k)
    if any(kk < 1 or kk > len(y) - 1 for kk in ks):
        raise ValueError(f"recall_at_k: every K must be in [1, {len(y) - 1}], got {ks}")
    order = _neighbour_order(pairwise_distances(e, metric))
    hit = y[order] == y[:, None]
    return {kk: float(hit[:, :kk].any(1).mean()) for kk in ks}


def map_at_r(embeddings: Any, labels: Any, metric: str = "euclidean") -> float:
    """Mean over queries of AP@R = (1/R) sum_{i=1}^{R} P@i * rel_i, R = number of other same-class samples.

    Queries with no other sample of their class (R = 0) are skipped.
    """
    e, y = _check("map_at_r", embeddings, labels)
    order = _neighbour_order(pairwise_distances(e, metric))
    rel = y[order] == y[:, None]
    r = rel.sum(1)
    aps = []
    for q in numpy.nonzero(r > 0)[0]:
        rq = rel[q, : r[q]]
        precision = numpy.cumsum(rq) / numpy.arange(1, r[q] + 1)
        aps.append(float((precision * rq).sum() / r[q]))
    if not aps:
        raise ValueError("map_at_r: no class has two samples, so no query has a relevant item")
    return float(numpy.mean(aps))


def verification_pairs(
    labels: Any, n_pairs: int, rng: numpy.random.Generator | None = None
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """n_pairs random pairs (i, j, same), half same-class and half different-class."""
    from handgrad.metric.sampling import sample_pairs

    return sample_pairs(_np(labels), n_pairs, rng)


def best_threshold(distances: Any, same: Any) -> float:
    """The threshold t maximising the accuracy of 'same iff d <= t' on these pairs (midpoint between values)."""
    d, s = _np(distances).astype(numpy.float64), _np(same).astype(bool)
    if d.shape != s.shape or d.ndim != 1 or len(d) == 0:
        raise ValueError(f"best_threshold: expected distances (P,) and same (P,), got {d.shape} and {s.shape}")
    order = numpy.argsort(d, kind="stable")
    ds, ss = d[order], s[order]
    # accuracy when the first m sorted pairs are called "same": same among them + different after them
    correct = numpy.concatenate([[0], numpy.cumsum(ss)]) + numpy.concatenate(
        [[(~ss).sum()], (~ss).sum() - numpy.cumsum(~ss)]
    )
    # only cut between distinct distances
    valid = numpy.concatenate([[True], ds[1:] > ds[:-1], [True]])
    m = int(numpy.argmax(numpy.where(valid, correct, -1)))
    if m == 0:
        return float(ds[0] - 1e-12)
    if m == len(ds):
        return float(ds[-1])
    return float(0.5 * (ds[m - 1] + ds[m]))


def verification_accuracy(distances: Any, same: Any, threshold: float) -> float:
    """Share of pairs classified right by 'same iff distance <= threshold'."""
    d, s = _np(distances), _np(same).astype(bool)
    if d.shape != s.shape:
        raise ValueError(f"verification_accuracy: distances {d.shape} and same {s.shape} differ in shape")
    return float(((d <= threshold) == s).mean())


def pair_distances(embeddings: Any, i: Any, j: Any, metric: str = "euclidean") -> numpy.ndarray:
    """dist(e_i, e_j) for index arrays i, j (no graph)."""
    e = _np(embeddings).astype(numpy.float64)
    a, b = e[_np(i)], e[_np(j)]
    if metric == "cosine":
        na = numpy.maximum(numpy.linalg.norm(a, axis=1), 1e-12)
        nb = numpy.maximum(numpy.linalg.norm(b, axis=1), 1e-12)
        return 1.0 - (a * b).sum(1) / (na * nb)
    sq = ((a - b) ** 2).sum(1)
    return sq if metric == "sqeuclidean" else numpy.sqrt(sq)


__all__ = [
    "best_threshold", "map_at_r", "pair_distances", "pairwise_distances", "recall_at_k", "verification_accuracy",
    "verification_pairs",
]
