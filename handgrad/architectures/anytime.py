"""Early-exit networks (MSDNet, the early-exit ResNet): their classifier head, training step and evaluation.

A multi-exit model's ``forward(x, max_exit=None)`` returns the list of logits of its exits ``1..max_exit``
(all by default), computing only the layers those exits need.

* Training: :func:`multi_exit_loss` ``= sum_k w_k * CE(logits_k, y)`` (MSDNet's summed loss; ``w_k = 1`` by
  default), driven by :class:`MultiExitUpdater` in the one training loop.
* Cost: :func:`exit_costs` prices each exit by counting multiply-adds: ``anytime[k]`` = the network up to exit k
  plus exit k's classifier (what one prediction at exit k costs), ``cumulative[k]`` = the same plus the
  classifiers of the earlier exits (what a sample that leaves at exit k cost, since it was tried at each).
* **Anytime prediction**: the accuracy of each exit against ``anytime[k]``.
* **Budgeted batch classification** (:func:`budgeted_batch`, :func:`budgeted_batch_curve`): a sample leaves at
  the first exit ``k`` whose softmax confidence ``max_c p_c`` reaches that exit's threshold ``t_k`` (the last exit
  takes the rest); the thresholds are chosen on *validation* data so that the average cost
  ``mean_i cumulative[exit_i]`` meets a budget ``B``, then applied to the test set. Two rules:

  - ``rule="geometric"`` (the paper's): the share of samples leaving at exit ``k`` follows a geometric law,
    ``q_k = z (1 - q)^(k-1) q`` (``z`` normalises over the ``K`` exits; ``q < 0`` puts more samples at the later
    exits). ``q`` is found by bisection so that the validation average cost is the largest one within ``B``; then
    ``t_k`` is the confidence of the ``round(N q_k)``-th most confident validation sample among those still
    there at exit ``k`` (:func:`geometric_thresholds`).
  - ``rule="shared"``: one threshold ``t`` for every exit, the largest whose validation average cost is within
    ``B`` (a simpler baseline).
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
           "exit_predictions", "geometric_exit_shares", "geometric_thresholds", "multi_exit_loss"]


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


def multi_exit_loss(outputs: Sequence[Tensor], target: Any, weights: Sequence[float] | None = None,
                    label_smoothing: float = 0.0) -> Tensor:
    """``sum_k w_k * cross_entropy(outputs[k], target)`` (each a batch mean, with ``label_smoothing``)."""
    if weights is not None and len(weights) != len(outputs):
        raise ValueError(f"multi_exit_loss: {len(weights)} weights for {len(outputs)} exits")
    total = None
    for k, out in enumerate(outputs):
        term = F.cross_entropy(out, target, label_smoothing=label_smoothing)
        if weights is not None:
            term = term * float(weights[k])
        total = term if total is None else total + term
    if total is None:
        raise ValueError("multi_exit_loss: no outputs")
    return total


class MultiExitUpdater(Updater):
    """One step on the summed (optionally weighted) loss of every exit; the metrics see the last exit.

    ``label_smoothing`` applies to the training steps only (evaluation reports the plain cross-entropy)."""

    def __init__(self, model: Any, optimizer: Any, weights: Sequence[float] | None = None,
                 grad_clip: float | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(model, optimizer, grad_clip)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.label_smoothing = float(label_smoothing)

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        x, y = batch
        outs = self.model(x if isinstance(x, Tensor) else Tensor(x))
        target = y if isinstance(y, Tensor) else Tensor(numpy.asarray(y))
        eps = self.label_smoothing if outs[-1].requires_grad else 0.0
        return multi_exit_loss(outs, target, self.weights, eps), outs[-1], y


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


def _exit_index(probs: numpy.ndarray, thresholds: numpy.ndarray) -> numpy.ndarray:
    """Index of the exit each sample leaves at: the first ``k`` with confidence ``>= thresholds[k]`` (the last exit
    takes the rest). ``probs``: ``(K, N, C)``; ``thresholds``: ``(K,)`` (its last entry is not used)."""
    conf = probs.max(axis=2)  # (K, N)
    passed = conf[:-1] >= numpy.asarray(thresholds, dtype=numpy.float64)[:-1, None]
    return numpy.where(passed.any(axis=0), passed.argmax(axis=0), len(probs) - 1)


def geometric_exit_shares(q: float, num_exits: int) -> numpy.ndarray:
    """The paper's exit distribution ``q_k = z (1 - q)^(k-1) q``, ``k = 1..K``, normalised to sum to 1
    (``q < 1``; ``q <= 0`` gives flat or increasing shares, the later exits taking more)."""
    if not q < 1.0:
        raise ValueError(f"geometric_exit_shares: q must be < 1, got {q}")
    return _shares(float(numpy.log1p(-q)), num_exits)


def _shares(log_r: float, num_exits: int) -> numpy.ndarray:
    """``r^(k-1) / sum_j r^(j-1)`` with ``r = 1 - q`` given as ``log r`` (so that ``q`` near 1 stays exact)."""
    logs = numpy.arange(num_exits) * log_r
    w = numpy.exp(logs - logs.max())
    return w / w.sum()


def geometric_thresholds(val_probs: numpy.ndarray, shares: Sequence[float]) -> numpy.ndarray:
    """Per-exit thresholds that let ``round(N * shares[k])`` validation samples leave at exit ``k``: exit k's
    threshold is the confidence of its ``n_k``-th most confident sample among those that did not leave earlier
    (``+inf`` when ``n_k = 0``; the last exit's is ``-inf``: it takes the rest). Ties at the threshold leave too."""
    num_exits, n = val_probs.shape[:2]
    conf = val_probs.max(axis=2)
    thresholds = numpy.full(num_exits, numpy.inf)
    thresholds[-1] = -numpy.inf
    left = numpy.ones(n, dtype=bool)
    for k in range(num_exits - 1):
        m = int(round(n * float(shares[k])))
        c = numpy.sort(conf[k][left])[::-1]
        if m <= 0 or not len(c):
            continue
        thresholds[k] = c[min(m, len(c)) - 1]
        left &= conf[k] < thresholds[k]
    return thresholds


def _check_budget(val_probs: numpy.ndarray, test_probs: numpy.ndarray, costs: numpy.ndarray, budget: float) -> None:
    if val_probs.shape[0] != len(costs) or test_probs.shape[0] != len(costs):
        raise ValueError(f"budgeted_batch: {len(costs)} exit costs for {val_probs.shape[0]} / {test_probs.shape[0]} "
                         "exits of probabilities")
    if numpy.any(numpy.diff(costs) < 0):
        raise ValueError(f"budgeted_batch: the cumulative exit costs must not decrease, got {costs.tolist()}")
    if not costs[0] <= budget <= costs[-1]:
        raise ValueError(f"budgeted_batch: budget {budget:,.0f} multiply-adds per image is outside the curve's range "
                         f"[{costs[0]:,.0f}, {costs[-1]:,.0f}] (all at the first exit .. all at the last)")


def _shared_threshold(val_probs: numpy.ndarray, costs: numpy.ndarray, budget: float) -> tuple[numpy.ndarray, dict]:
    """One threshold for all exits: the largest validation confidence whose validation average cost is within
    the budget (cost grows with the threshold)."""
    k = len(costs)
    conf = val_probs[:-1].max(axis=2)  # (K-1, N)
    n = conf.shape[1]
    cands = numpy.unique(numpy.concatenate([conf.ravel(), [numpy.inf]]))
    # a sample leaves at the first exit whose confidence reaches t, i.e. at or before exit j iff the running max
    # of its confidences up to j reaches t: count those for every candidate at once (sorted search) instead of
    # re-running _exit_index per candidate (18,000 candidates x 12 budgets took minutes)
    running = numpy.sort(numpy.maximum.accumulate(conf, axis=0), axis=1)
    by = [n - numpy.searchsorted(running[j], cands, side="left") for j in range(k - 1)]  # left at or before j
    total = numpy.zeros(len(cands))
    prev = numpy.zeros(len(cands), dtype=numpy.int64)
    for j in range(k - 1):
        total += costs[j] * (by[j] - prev)
        prev = by[j]
    total += costs[-1] * (n - prev)
    val_cost = total / n
    ok = numpy.nonzero(val_cost <= budget + 1e-9)[0]
    t = float(cands[ok[-1]]) if len(ok) else float(cands[0])
    return numpy.full(k, t), {"threshold": t}


def _geometric(val_probs: numpy.ndarray, costs: numpy.ndarray, budget: float) -> tuple[numpy.ndarray, dict]:
    """The paper's rule: bisection on ``log(1 - q)`` for the largest validation average cost within ``budget``."""
    k = len(costs)

    def val_cost(log_r: float) -> tuple[float, numpy.ndarray, numpy.ndarray]:
        shares = _shares(log_r, k)  # r = 1 - q
        th = geometric_thresholds(val_probs, shares)
        return float(costs[_exit_index(val_probs, th)].mean()), th, shares

    lo, hi = -40.0, 40.0  # r = e^-40: everything at exit 1; r = e^40: everything at the last exit
    best_log_r, best = hi, val_cost(hi)
    if best[0] > budget + 1e-9:
        best_log_r, best = lo, val_cost(lo)  # within any budget >= costs[0]: everything leaves at exit 1
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            c = val_cost(mid)
            if c[0] <= budget + 1e-9:
                lo, best_log_r, best = mid, mid, c
            else:
                hi = mid
    # q = 1 - r; at the top of the range (r = e^40, everything at the last exit) q is -inf: reported as None
    q = None if best_log_r >= 40.0 else float(-numpy.expm1(best_log_r))
    return best[1], {"q": q, "exit_shares": [float(v) for v in best[2]]}


def budgeted_batch(val_probs: numpy.ndarray, test_probs: numpy.ndarray, test_labels: numpy.ndarray,
                   costs: Sequence[float], budget: float, rule: str = "geometric") -> dict[str, Any]:
    """Choose the exit thresholds on the validation probabilities ``(K, N_val, C)`` for an average ``budget`` of
    multiply-adds per image (``costs``: the cumulative cost of each exit, non-decreasing) with ``rule``
    (``"geometric"``: per-exit thresholds, the paper's; ``"shared"``: one threshold), apply them to the test set.

    Returns the thresholds, the validation and test average costs, the test accuracy and the share of test samples
    leaving at each exit (the geometric rule adds its ``q`` and exit shares). A budget outside
    ``[costs[0], costs[-1]]`` (everything at the first exit .. everything at the last) is a ValueError naming it."""
    costs = numpy.asarray(costs, dtype=numpy.float64)
    _check_budget(val_probs, test_probs, costs, budget)
    if rule == "geometric":
        th, extra = _geometric(val_probs, costs, budget)
    elif rule == "shared":
        th, extra = _shared_threshold(val_probs, costs, budget)
    else:
        raise ValueError(f"budgeted_batch: rule must be 'geometric' or 'shared', got {rule!r}")
    idx = _exit_index(test_probs, th)
    pred = test_probs[idx, numpy.arange(test_probs.shape[1])].argmax(axis=1)
    return {"budget": float(budget), "rule": rule, **extra,
            "thresholds": [float(v) for v in th[:-1]],
            "val_cost": float(costs[_exit_index(val_probs, th)].mean()),
            "test_cost": float(costs[idx].mean()), "test_accuracy": float((pred == test_labels).mean()),
            "exit_fractions": [float((idx == j).mean()) for j in range(len(costs))]}


def budgeted_batch_curve(val_probs: numpy.ndarray, test_probs: numpy.ndarray, test_labels: numpy.ndarray,
                         costs: Sequence[float], points: int = 12, rule: str = "geometric") -> list[dict[str, Any]]:
    """:func:`budgeted_batch` at ``points`` budgets evenly spaced over the curve's range."""
    return [budgeted_batch(val_probs, test_probs, test_labels, costs, float(b), rule)
            for b in numpy.linspace(costs[0], costs[-1], points)]
