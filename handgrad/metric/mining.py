"""Pair and triplet mining from class labels (and, for the hard strategies, a distance matrix).

A batch of N embeddings with labels y gives the deck's constraint sets:
S = {(i, j): y_i = y_j, i != j} (must-link), D = {(i, j): y_i != y_j} (cannot-link) and
R = {(a, p, n): (a, p) in S, (a, n) in D} (relative). Mining picks which of them to train on:

* ``"all"`` (batch-all): every valid pair / triplet (Hermans et al. 2017 average over the active ones).
* ``"hard"`` (batch-hard): per anchor a, the hardest positive argmax_{p: y_p = y_a} D_ap and the hardest
  negative argmin_{n: y_n != y_a} D_an (Hermans et al. 2017).
* ``"semihard"``: per positive pair (a, p), the closest negative that is still farther than the positive but
  inside the margin, D_ap < D_an < D_ap + margin (Schroff et al. 2015, FaceNet).

Everything returns NumPy int64 index arrays into the batch; ties resolve to the lowest index. Mining is not
differentiated: gather the embeddings with the indices and apply a loss from ``handgrad.functional``.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.tensor import Tensor

STRATEGIES = ("all", "hard", "semihard")


def _labels(op: str, labels: Any) -> numpy.ndarray:
    y = labels.numpy() if isinstance(labels, Tensor) else numpy.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{op}: labels must be 1-D (N,), got shape {tuple(y.shape)}")
    if y.dtype.kind not in "iub":
        raise TypeError(f"{op}: labels must be integers, got dtype {y.dtype}")
    return y


def _distances(op: str, distances: Any, n: int) -> numpy.ndarray:
    if distances is None:
        raise ValueError(f"{op}: this strategy needs the (N, N) distance matrix of the batch")
    d = distances.numpy() if isinstance(distances, Tensor) else numpy.asarray(distances)
    if d.shape != (n, n):
        raise ValueError(f"{op}: distances must be ({n}, {n}) for {n} labels, got {tuple(d.shape)}")
    return d


def _masks(y: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    same = y[:, None] == y[None, :]
    pos = same & ~numpy.eye(len(y), dtype=bool)
    return pos, ~same


def _no_triplet_error(op: str, y: numpy.ndarray) -> ValueError:
    classes, counts = numpy.unique(y, return_counts=True)
    summary = dict(zip(classes.tolist(), counts.tolist()))
    return ValueError(
        f"{op}: no valid triplet in a batch of {len(y)} with class counts {summary}: an anchor needs a "
        "positive (another sample of its class) and a negative (a sample of another class); sample at least "
        "two classes with two samples each (see handgrad.metric.sampling.balanced_batch_indices)"
    )


def mine_pairs(
    labels: Any, distances: Any = None, strategy: str = "all", margin: float = 1.0
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Pairs (i, j, similar) for the contrastive loss.  labels (N,), distances (N, N) -> three (P,) arrays.

    ``"all"``: every unordered pair i < j. ``"hard"``: per anchor i, its hardest positive (i, argmax D_ip) and its
    hardest negative (i, argmin D_in). ``"semihard"``: the positive pairs (a, p) and negative pairs (a, n) of the
    semi-hard triplets (see :func:`mine_triplets`). ``similar`` is 1 for a same-class pair, else 0.
    """
    op = "mine_pairs"
    if strategy not in STRATEGIES:
        raise ValueError(f"{op}: unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    y = _labels(op, labels)
    n = len(y)
    pos, neg = _masks(y)
    if not pos.any() or not neg.any():
        raise ValueError(
            f"{op}: a batch of {n} labels needs at least one same-class and one different-class pair, "
            f"got classes {numpy.unique(y).tolist()}"
        )
    if strategy == "all":
        i, j = numpy.triu_indices(n, k=1)
        return i.astype(numpy.int64), j.astype(numpy.int64), (y[i] == y[j]).astype(numpy.int64)
    if strategy == "hard":
        d = _distances(op, distances, n)
        ii, jj, ss = [], [], []
        for a in range(n):
            if pos[a].any():
                ii.append(a)
                jj.append(int(numpy.argmax(numpy.where(pos[a], d[a], -numpy.inf))))
                ss.append(1)
            if neg[a].any():
                ii.append(a)
                jj.append(int(numpy.argmin(numpy.where(neg[a], d[a], numpy.inf))))
                ss.append(0)
        return numpy.asarray(ii, numpy.int64), numpy.asarray(jj, numpy.int64), numpy.asarray(ss, numpy.int64)
    a, p, ng = mine_triplets(y, distances, "semihard", margin)
    pp = numpy.unique(numpy.stack([a, p], 1), axis=0).reshape(-1, 2)
    nn = numpy.unique(numpy.stack([a, ng], 1), axis=0).reshape(-1, 2)
    i = numpy.concatenate([pp[:, 0], nn[:, 0]]).astype(numpy.int64)
    j = numpy.concatenate([pp[:, 1], nn[:, 1]]).astype(numpy.int64)
    s = numpy.concatenate([numpy.ones(len(pp), numpy.int64), numpy.zeros(len(nn), numpy.int64)])
    return i, j, s


def mine_triplets(
    labels: Any, distances: Any = None, strategy: str = "all", margin: float = 1.0, active_only: bool = False
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Triplet indices (anchor, positive, negative).  labels (N,), distances (N, N) -> three (T,) arrays.

    ``"all"``: every (a, p, n) with y_a = y_p, a != p, y_n != y_a, in lexicographic order; with
    ``active_only`` only those with D_ap - D_an + margin > 0 (the ones with a non-zero loss).
    ``"hard"``: one triplet per anchor that has a positive and a negative: (a, argmax_p D_ap, argmin_n D_an).
    ``"semihard"``: one triplet per positive pair (a, p) that has a negative with D_ap < D_an < D_ap + margin,
    namely the closest such negative; pairs without one are dropped (the result may then be empty).

    Raises ``ValueError`` when the labels admit no valid triplet at all.
    """
    op = "mine_triplets"
    if strategy not in STRATEGIES:
        raise ValueError(f"{op}: unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    y = _labels(op, labels)
    n = len(y)
    pos, neg = _masks(y)
    has = pos.any(1) & neg.any(1)
    if not has.any():
        raise _no_triplet_error(op, y)
    if strategy == "all":
        valid = pos[:, :, None] & neg[:, None, :]
        if active_only:
            d = _distances(op, distances, n)
            valid &= (d[:, :, None] - d[:, None, :] + margin) > 0
        a, p, ng = numpy.nonzero(valid)
        return a.astype(numpy.int64), p.astype(numpy.int64), ng.astype(numpy.int64)
    d = _distances(op, distances, n)
    if strategy == "hard":
        anchors = numpy.nonzero(has)[0]
        p = numpy.argmax(numpy.where(pos, d, -numpy.inf), axis=1)[anchors]
        ng = numpy.argmin(numpy.where(neg, d, numpy.inf), axis=1)[anchors]
        return anchors.astype(numpy.int64), p.astype(numpy.int64), ng.astype(numpy.int64)
    # semihard: for every positive pair (a, p), negatives with D_ap < D_an < D_ap + margin
    a, p = numpy.nonzero(pos)
    d_ap = d[a, p][:, None]
    d_an = d[a]  # (P, N)
    ok = neg[a] & (d_an > d_ap) & (d_an < d_ap + margin)
    keep = ok.any(1)
    ng = numpy.argmin(numpy.where(ok, d_an, numpy.inf), axis=1)
    return a[keep].astype(numpy.int64), p[keep].astype(numpy.int64), ng[keep].astype(numpy.int64)


__all__ = ["STRATEGIES", "mine_pairs", "mine_triplets"]
