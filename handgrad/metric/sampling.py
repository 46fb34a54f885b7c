"""Batch construction for metric learning: random balanced pairs, and P-classes x K-samples batches.

Batch-hard and semi-hard mining need every anchor to have a positive in the batch, so triplet training draws
"PK" batches (Hermans et al. 2017): P classes, K samples of each. Siamese training draws pairs, half of them
from one class (similar, s = 1) and half from two classes (s = 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy

from handgrad.engine.random import get_rng


def _labels(op: str, labels: Any) -> numpy.ndarray:
    y = labels.numpy() if hasattr(labels, "numpy") and not isinstance(labels, numpy.ndarray) else labels
    y = numpy.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{op}: labels must be a 1-D integer array, got shape {y.shape} and dtype {y.dtype}")
    return y


def sample_pairs(
    labels: Any, n_pairs: int, rng: numpy.random.Generator | None = None
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """``n_pairs`` pairs (i, j, similar): the first half same-class (i != j), the rest different-class."""
    op = "sample_pairs"
    y = _labels(op, labels)
    rng = get_rng() if rng is None else rng
    classes, counts = numpy.unique(y, return_counts=True)
    usable = classes[counts >= 2]
    if len(classes) < 2 or len(usable) == 0:
        raise ValueError(
            f"{op}: need a class with two samples and at least two classes, got class counts "
            f"{dict(zip(classes.tolist(), counts.tolist()))}"
        )
    by_class = {c: numpy.nonzero(y == c)[0] for c in classes.tolist()}
    n_sim = n_pairs // 2
    i = numpy.empty(n_pairs, numpy.int64)
    j = numpy.empty(n_pairs, numpy.int64)
    cs = rng.choice(usable, size=n_sim)
    for k, c in enumerate(cs.tolist()):
        i[k], j[k] = rng.choice(by_class[c], size=2, replace=False)
    for k in range(n_sim, n_pairs):
        c1, c2 = rng.choice(classes, size=2, replace=False).tolist()
        i[k], j[k] = rng.choice(by_class[c1]), rng.choice(by_class[c2])
    s = numpy.concatenate([numpy.ones(n_sim, numpy.int64), numpy.zeros(n_pairs - n_sim, numpy.int64)])
    return i, j, s


def balanced_batch_indices(
    labels: Any, p: int, k: int, rng: numpy.random.Generator | None = None
) -> numpy.ndarray:
    """One batch of P * K indices: P distinct classes, K samples of each (with replacement if a class is small)."""
    op = "balanced_batch_indices"
    y = _labels(op, labels)
    rng = get_rng() if rng is None else rng
    classes = numpy.unique(y)
    if p < 2 or k < 2 or p > len(classes):
        raise ValueError(f"{op}: need 2 <= P <= {len(classes)} classes and K >= 2 samples, got P={p}, K={k}")
    out = []
    for c in rng.choice(classes, size=p, replace=False).tolist():
        idx = numpy.nonzero(y == c)[0]
        out.append(rng.choice(idx, size=k, replace=len(idx) < k))
    return numpy.concatenate(out).astype(numpy.int64)


class PKBatchSampler:
    """Iterates ``n_batches`` PK batches (index arrays of length P * K); ``len()`` is the number of batches."""

    def __init__(self, labels: Any, p: int, k: int, n_batches: int, seed: int | None = None) -> None:
        self.labels = _labels("PKBatchSampler", labels)
        self.p, self.k, self.n_batches = p, k, n_batches
        self.rng = numpy.random.default_rng(seed) if seed is not None else None
        balanced_batch_indices(self.labels, p, k, numpy.random.default_rng(0))  # validate once, early

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[numpy.ndarray]:
        for _ in range(self.n_batches):
            yield balanced_batch_indices(self.labels, self.p, self.k, self.rng)


__all__ = ["PKBatchSampler", "balanced_batch_indices", "sample_pairs"]
