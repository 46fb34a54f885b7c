"""Metrics the ``Trainer`` accumulates over an epoch: ``"accuracy"`` built in, any callable pluggable.

A metric is updated once per batch with the model's output and the targets, and ``compute()`` gives the
value over everything seen since ``reset()``: a running, sample-weighted mean, so the epoch value is the
exact dataset value however the batches were cut (the last batch may be smaller).

Pass to ``Trainer(metrics=...)`` any of

* a name: ``"accuracy"`` (alias ``"acc"``);
* a ``Metric`` instance;
* a callable ``fn(output, target) -> float`` (the batch mean), named by ``fn.__name__``;
* a ``(name, fn)`` pair or a ``{name: fn}`` dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy

from handgrad.engine.backend import to_host
from handgrad.engine.tensor import Tensor


def _array(x: Any) -> numpy.ndarray:
    """A host NumPy array of a Tensor or an array on any device (metrics are host-side bookkeeping)."""
    if isinstance(x, Tensor):
        return x.numpy()
    return to_host(x)


def batch_size_of(output: Any, target: Any) -> int:
    """Samples in a batch: the leading dimension of the target (or of the output when there is none)."""
    ref = target if target is not None else output
    if isinstance(ref, (tuple, list)):
        ref = ref[0]
    shape = getattr(ref, "shape", None)
    if shape is None:
        shape = numpy.shape(ref)
    return int(shape[0]) if len(shape) else 1


class Metric:
    """Base class: ``reset()``, ``update(output, target)`` per batch, ``compute()`` for the epoch."""

    name: str = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, output: Any, target: Any) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError


def accuracy(output: Any, target: Any) -> float:
    """Fraction of correct predictions in a batch.

    * ``output (N, C, *)`` scores and ``target (N, *)`` class indices: prediction = argmax over dim 1
      (PyTorch's ``cross_entropy`` layout, so sequences ``(N, C, T)`` work too);
    * ``target`` one-hot / probabilities with the output's shape ``(N, C)``: argmax of both;
    * ``output (N,)`` or ``(N, 1)`` logits with ``{0, 1}`` targets: prediction = ``logit > 0``.
    """
    correct, total = _accuracy_counts(_array(output), _array(target))
    return correct / max(total, 1)


def _accuracy_counts(out: numpy.ndarray, tgt: numpy.ndarray) -> tuple[int, int]:
    if out.ndim == tgt.ndim + 1 and out.ndim >= 2:
        pred = out.argmax(axis=1)
    elif out.shape == tgt.shape and out.ndim == 2 and out.shape[1] > 1:
        pred, tgt = out.argmax(axis=1), tgt.argmax(axis=1)
    elif out.ndim <= 2 and out.size == tgt.size and (out.ndim < 2 or out.shape[-1] == 1):
        pred, tgt = (out.reshape(-1) > 0).astype(numpy.int64), tgt.reshape(-1)
    else:
        raise ValueError(
            f"accuracy: cannot compare output of shape {out.shape} with target of shape {tgt.shape}; "
            "expected scores (N, C, *) with class indices (N, *), one-hot targets (N, C), or logits (N,)"
        )
    return int((pred == tgt).sum()), int(pred.size)


class Accuracy(Metric):
    """Classification accuracy over the epoch (see :func:`accuracy` for the accepted layouts)."""

    name = "accuracy"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: Any, target: Any) -> None:
        c, t = _accuracy_counts(_array(output), _array(target))
        self.correct += c
        self.total += t

    def compute(self) -> float:
        return self.correct / self.total if self.total else float("nan")


class MeanMetric(Metric):
    """Wraps ``fn(output, target) -> float`` (a batch mean) into a sample-weighted mean over the epoch."""

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, output: Any, target: Any) -> None:
        n = batch_size_of(output, target)
        v = self.fn(output, target)
        self.total += float(v.item() if hasattr(v, "item") else v) * n
        self.count += n

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


_BUILTIN: dict[str, Callable[[], Metric]] = {"accuracy": Accuracy, "acc": Accuracy}


def get_metric(spec: Any) -> Metric:
    """One metric from a name, a ``Metric``, a callable or a ``(name, callable)`` pair."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec not in _BUILTIN:
            raise ValueError(f"metrics: unknown metric {spec!r}; built in: {', '.join(sorted(_BUILTIN))}")
        return _BUILTIN[spec]()
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and callable(spec[1]):
        return spec[1] if isinstance(spec[1], Metric) else MeanMetric(spec[1], spec[0])
    if callable(spec):
        return MeanMetric(spec)
    raise TypeError(f"metrics: expected a name, a Metric or a callable, got {type(spec).__name__}")


def get_metrics(specs: Any) -> list[Metric]:
    """The list of metrics for ``Trainer(metrics=...)``; names must be unique and not ``loss``."""
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)) or callable(specs):
        specs = [specs]
    if isinstance(specs, Mapping):
        items: Iterable[Any] = list(specs.items())
    else:
        items = list(specs)
    metrics = [get_metric(s) for s in items]
    names = [m.name for m in metrics]
    for n in names:
        if n == "loss" or n.startswith("val_"):
            raise ValueError(f"metrics: the name {n!r} is reserved (loss and val_* are logged by the Trainer)")
        if names.count(n) > 1:
            raise ValueError(f"metrics: the name {n!r} is used twice")
    return metrics
