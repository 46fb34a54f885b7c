"""Metric-learning losses over a whole labelled batch, with online mining, and their ``Module`` wrappers.

``batch_triplet_loss(embeddings, labels)``: D = distance_matrix(embeddings); triplets (a, p, n) mined from the
labels and D (batch-all / batch-hard / semi-hard); L = mean over the chosen triplets of
max(0, D_ap - D_an + margin). For batch-all the mean is over the *active* triplets (non-zero loss) by default,
as Hermans et al. 2017 recommend, since most triplets are easy and would dilute the gradient.

``batch_contrastive_loss(embeddings, labels)``: the same with mined pairs and the contrastive loss.

The gradient flows through the gathered entries of D back to every embedding (hand-written VJPs of
``DistanceMatrixFunction``, ``GetItemFunction`` and ``TripletHingeFunction`` / ``ContrastiveFromDistanceFunction``).
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.tensor import Tensor
from handgrad.functional.metric_losses import (
    ContrastiveFromDistanceFunction,
    TripletHingeFunction,
    _check_metric,
    contrastive_loss,
    distance_matrix,
    triplet_margin_loss,
)
from handgrad.metric.mining import mine_pairs, mine_triplets
from handgrad.nn.module import Module


def _labels_np(labels: Any) -> numpy.ndarray:
    return labels.numpy() if isinstance(labels, Tensor) else numpy.asarray(labels)


def batch_triplet_loss(
    embeddings: Tensor,
    labels: Any,
    margin: float = 1.0,
    strategy: str = "hard",
    metric: str = "euclidean",
    average: str = "auto",
) -> Tensor:
    """Triplet loss of a labelled batch with online mining.  embeddings (N, D), labels (N,) -> scalar.

    ``strategy``: "all" | "hard" | "semihard" (see ``handgrad.metric.mining``). ``average``: "active" divides by
    the number of triplets with a non-zero loss, "all" by the number mined; "auto" is "active" for batch-all
    and "all" otherwise. When nothing is mined (semi-hard can find none) the loss is 0 with a zero gradient.
    """
    op = "batch_triplet_loss"
    _check_metric(op, metric)
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        raise ValueError(f"{op}: expected embeddings (N, D), got {getattr(embeddings, 'shape', type(embeddings))}")
    y = _labels_np(labels)
    if y.shape != (embeddings.shape[0],):
        raise ValueError(f"{op}: labels {y.shape} do not match embeddings {embeddings.shape}")
    if average not in ("auto", "active", "all"):
        raise ValueError(f"{op}: average must be 'auto', 'active' or 'all', got {average!r}")
    D = distance_matrix(embeddings, metric=metric)
    a, p, n = mine_triplets(y, D.array, strategy, margin)
    if len(a) == 0:
        return (embeddings * 0.0).sum()
    mode = ("active" if strategy == "all" else "all") if average == "auto" else average
    if mode == "active":
        n_active = int(((D.array[a, p] - D.array[a, n] + margin) > 0).sum())
        return TripletHingeFunction(margin, "sum")(D[a, p], D[a, n]) / float(max(n_active, 1))
    return TripletHingeFunction(margin, "mean")(D[a, p], D[a, n])


def batch_contrastive_loss(
    embeddings: Tensor,
    labels: Any,
    margin: float = 1.0,
    strategy: str = "all",
    metric: str = "euclidean",
    squared: bool = False,
) -> Tensor:
    """Contrastive loss of a labelled batch over mined pairs (see ``mine_pairs``).  (N, D), (N,) -> scalar."""
    op = "batch_contrastive_loss"
    _check_metric(op, metric)
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        raise ValueError(f"{op}: expected embeddings (N, D), got {getattr(embeddings, 'shape', type(embeddings))}")
    y = _labels_np(labels)
    if y.shape != (embeddings.shape[0],):
        raise ValueError(f"{op}: labels {y.shape} do not match embeddings {embeddings.shape}")
    D = distance_matrix(embeddings, metric=metric)
    i, j, s = mine_pairs(y, D.array, strategy, margin)
    flags = Tensor._from_op(s.astype(embeddings.dtype), None, 0)
    return ContrastiveFromDistanceFunction(margin, squared, "mean")(D[i, j], flags)


class TripletMarginLoss(Module):
    """``torch.nn.TripletMarginLoss``: forward(anchor, positive, negative) -> triplet_margin_loss(...)."""

    def __init__(
        self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.margin, self.p, self.eps, self.swap, self.reduction = margin, p, eps, swap, reduction

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(
            anchor, positive, negative, self.margin, self.p, self.eps, self.swap, reduction=self.reduction
        )


class ContrastiveLoss(Module):
    """forward(x1, x2, similar) -> contrastive_loss(x1, x2, similar, margin, squared, metric, reduction)."""

    def __init__(
        self, margin: float = 1.0, squared: bool = False, metric: str = "euclidean", reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.margin, self.squared, self.metric, self.reduction = margin, squared, metric, reduction

    def forward(self, x1: Tensor, x2: Tensor, similar: Any) -> Tensor:
        return contrastive_loss(x1, x2, similar, self.margin, self.squared, self.metric, self.reduction)


class SiameseNetwork(Module):
    """One embedding network phi applied to every input with the same (shared) weights.

    forward(x) -> phi(x); forward(x1, x2) -> (phi(x1), phi(x2)); forward(a, p, n) -> three embeddings.
    Because the same sub-module runs each time, the gradients of all branches add up in its parameters.
    """

    def __init__(self, embedding_net: Module) -> None:
        super().__init__()
        self.embedding_net = embedding_net

    def forward(self, *xs: Tensor) -> Any:
        if not xs:
            raise ValueError("SiameseNetwork: forward needs at least one input batch")
        outs = tuple(self.embedding_net(x) for x in xs)
        return outs[0] if len(outs) == 1 else outs


__all__ = [
    "ContrastiveLoss", "SiameseNetwork", "TripletMarginLoss", "batch_contrastive_loss", "batch_triplet_loss",
]
