"""Early-exit networks (MSDNet, the early-exit ResNet): their classifier head, training step and evaluation.

A multi-exit model's ``forward(x, max_exit=None)`` returns the list of logits of its exits ``1..max_exit``
(all by default), computing only the layers those exits need.

* Training: :func:`multi_exit_loss` ``= sum_k w_k * CE(logits_k, y)`` (MSDNet's summed loss; ``w_k = 1`` by
  default), driven by :class:`MultiExitUpdater` in the one training loop.
* Cost: :func:`exit_costs` prices each exit by counting multiply-adds: ``anytime[k]`` = the network up to exit k
  plus exit k's classifier (what one prediction at exit k costs), ``cumulative[k]`` = the same plus the
  classifiers of the earlier exits (what a sample that leaves at exit k cost, since it was tried at each).
* **Anytime prediction**: the accuracy of each exit against ``anytime[k]``.
* **Budgeted batch classification** (:func:`budgeted_batch_curve`): a sample leaves at the first exit whose
  softmax confidence ``max_c p_c`` reaches a threshold ``t`` (the last exit takes the rest). The average cost
  ``cost(t) = mean_i cumulative[exit_i(t)]`` grows with ``t``; for a budget ``B`` the threshold is the largest
  ``t`` whose *validation* average cost stays within ``B``, then applied to the test set. One threshold shared
  by the exits (a simplification of the paper's per-exit thresholds from a geometric exit distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

import handgrad.functional as F
from handgrad import nn
from handgrad.architectures.flops import multiply_adds_by_module
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.train.updaters import Updater

__all__ = ["ExitClassifier", "MultiExitUpdater", "budgeted_batch", "budgeted_batch_curve", "exit_costs",
           "exit_predictions", "multi_exit_loss"]


class ExitClassifier(nn.Module):
    """Intermediate classifier: two ``conv3x3(stride 2) -> BN -> ReLU``, global average pooling, linear.

    Input ``(N, in_channels, H, W)``; output logits ``(N, num_classes)``."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def multi_exit_loss(outputs: Sequence[Tensor], target: Any, weights: Sequence[float] | None = None) -> Tensor:
    """``sum_k w_k * cross_entropy(outputs[k], target)`` (each a batch mean)."""
    if weights is not None and len(weights) != len(outputs):
        raise ValueError(f"multi_exit_loss: {len(weights)} weights for {len(outputs)} exits")
    total = None
    for k, out in enumerate(outputs):
        term = F.cross_entropy(out, target)
        if weights is not None:
            term = term * float(weights[k])
        total = term if total is None else total + term
    if total is None:
        raise ValueError("multi_exit_loss: no outputs")
    return total


class MultiExitUpdater(Updater):
    """One step on the summed (optionally weighted) loss of every exit; the metrics see the last exit."""

    def __init__(self, model: Any, optimizer: Any, weights: Sequence[float] | None = None,
                 grad_clip: float | None = None) -> None:
        super().__init__(model, optimizer, grad_clip)
        self.weights = None if weights is None else [float(w) for w in weights]

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        x, y = batch
        outs = self.model(x if isinstance(x, Tensor) else Tensor(x))
        target = y if isinstance(y, Tensor) else Tensor(numpy.asarray(y))
        return multi_exit_loss(outs, target, self.weights), outs[-1], y


def exit_costs(model: Any, x: Tensor) -> dict[str, list[int]]:
    """Multiply-adds per image of each exit: ``{"anytime": [...], "cumulative": [...]}`` (module docstring).

    ``model`` must have ``num_exits`` and ``classifiers`` (one module per exit, in order) and accept
    ``forward(x, max_exit=k)``."""
    was_training = model.training
    model.eval()
    try:
        names = [n for n, m in model.named_modules() if any(m is c for c in model.classifiers)]
        anytime, cumulative = [], []
        for k in range(1, model.num_exits + 1):
            table = multiply_adds_by_module(model, x[:1], lambda m, t, _k=k: m(t, max_exit=_k))
            total = sum(table.values())
            earlier = sum(v for n, v in table.items() if any(n == c or n.startswith(c + ".") for c in names[:k - 1]))
            cumulative.append(int(total))
            anytime.append(int(total - earlier))
    finally:
        model.train(was_training)
    return {"anytime": anytime, "cumulative": cumulative}


def exit_predictions(model: Any, x: numpy.ndarray, batch_size: int = 500) -> numpy.ndarray:
    """Softmax probabilities of every exit, ``(num_exits, N, num_classes)``, in eval mode under no_grad."""
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with no_grad():
            for i in range(0, len(x), batch_size):
                outs = model(Tensor(x[i:i + batch_size]))
                chunks.append(numpy.stack([F.softmax(o, dim=1).numpy() for o in outs]))
    finally:
        model.train(was_training)
    return numpy.concatenate(chunks, axis=1)


def _exit_index(probs: numpy.ndarray, t: float) -> numpy.ndarray:
    """Index of the exit each sample leaves at under threshold ``t`` (the last exit takes the rest)."""
    conf = probs.max(axis=2)  # (K, N)
    passed = conf[:-1] >= t
    first = numpy.where(passed.any(axis=0), passed.argmax(axis=0), len(probs) - 1)
    return first


def budgeted_batch(val_probs: numpy.ndarray, test_probs: numpy.ndarray, test_labels: numpy.ndarray,
                   costs: Sequence[float], budget: float) -> dict[str, float]:
    """Pick the threshold on the validation probabilities for an average ``budget`` of multiply-adds per image
    (``costs``: the cumulative cost of each exit) and apply it to the test set; returns the threshold, the
    validation and test average costs and the test accuracy. A budget outside ``[costs[0], costs[-1]]``
    (everything at the first exit .. everything at the last) is a ValueError naming it."""
    costs = numpy.asarray(costs, dtype=numpy.float64)
    if val_probs.shape[0] != len(costs) or test_probs.shape[0] != len(costs):
        raise ValueError(f"budgeted_batch: {len(costs)} exit costs for {val_probs.shape[0]} / {test_probs.shape[0]} "
                         "exits of probabilities")
    if not costs[0] <= budget <= costs[-1]:
        raise ValueError(f"budgeted_batch: budget {budget:,.0f} multiply-adds per image is outside the curve's range "
                         f"[{costs[0]:,.0f}, {costs[-1]:,.0f}] (all at the first exit .. all at the last)")
    # candidate thresholds: every validation confidence (and +inf: nobody leaves early), cost grows with t
    cands = numpy.unique(numpy.concatenate([val_probs[:-1].max(axis=2).ravel(), [numpy.inf]]))
    val_cost = numpy.array([costs[_exit_index(val_probs, t)].mean() for t in cands])
    ok = numpy.nonzero(val_cost <= budget + 1e-9)[0]
    t = float(cands[ok[-1]]) if len(ok) else float(cands[0])
    idx = _exit_index(test_probs, t)
    pred = test_probs[idx, numpy.arange(test_probs.shape[1])].argmax(axis=1)
    return {"budget": float(budget), "threshold": t, "val_cost": float(costs[_exit_index(val_probs, t)].mean()),
            "test_cost": float(costs[idx].mean()), "test_accuracy": float((pred == test_labels).mean()),
            "exit_fractions": [float((idx == k).mean()) for k in range(len(costs))]}


def budgeted_batch_curve(val_probs: numpy.ndarray, test_probs: numpy.ndarray, test_labels: numpy.ndarray,
                         costs: Sequence[float], points: int = 12) -> list[dict[str, float]]:
    """:func:`budgeted_batch` at ``points`` budgets evenly spaced over the curve's range."""
    return [budgeted_batch(val_probs, test_probs, test_labels, costs, float(b))
            for b in numpy.linspace(costs[0], costs[-1], points)]
