"""Sequence-level scores: token accuracy and exact match (padding excluded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy


def token_accuracy(predicted: Any, target: Any, pad_index: int | None = None) -> float:
    """Fraction of target positions (not padding) where the predicted token id equals the target's."""
    p, t = numpy.asarray(predicted), numpy.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"token_accuracy: predicted {p.shape} and target {t.shape} differ in shape")
    mask = numpy.ones(t.shape, bool) if pad_index is None else t != pad_index
    n = int(mask.sum())
    return float(((p == t) & mask).sum() / n) if n else 0.0


def exact_match(predicted: Sequence[Any], target: Sequence[Any]) -> float:
    """Fraction of sequences reproduced exactly (strings or token lists)."""
    if len(predicted) != len(target):
        raise ValueError(f"exact_match: {len(predicted)} predictions for {len(target)} targets")
    if not target:
        return 0.0
    return sum(list(a) == list(b) for a, b in zip(predicted, target)) / len(target)
