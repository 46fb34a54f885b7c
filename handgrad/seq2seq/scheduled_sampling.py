"""Scheduled sampling (Bengio et al. 2015): at training step i the decoder is fed the ground-truth previous
token with probability eps_i and its own sample otherwise, eps_i decaying from 1 (teacher forcing) towards
free running. The paper's three decays:

    linear:           eps_i = max(eps_min, k - c i)
    exponential:      eps_i = k^i              (k < 1)
    inverse sigmoid:  eps_i = k / (k + exp(i / k))   (k >= 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from handgrad.engine.random import get_rng


class TeacherForcingSchedule:
    """eps_i, the probability of feeding the ground truth at step ``i``: ``schedule(i)``."""

    def __init__(self, kind: str = "inverse_sigmoid", k: float | None = None, c: float = 1e-4,
                 eps_min: float = 0.0) -> None:
        defaults = {"constant": 1.0, "linear": 1.0, "exponential": 0.9999, "inverse_sigmoid": 1000.0}
        if kind not in defaults:
            raise ValueError(f"TeacherForcingSchedule: kind must be one of {sorted(defaults)}, got {kind!r}")
        self.kind, self.k, self.c, self.eps_min = kind, defaults[kind] if k is None else float(k), c, eps_min
        if kind == "exponential" and not 0 < self.k < 1:
            raise ValueError(f"TeacherForcingSchedule: exponential decay needs 0 < k < 1, got {self.k}")
        if kind == "inverse_sigmoid" and self.k < 1:
            raise ValueError(f"TeacherForcingSchedule: inverse sigmoid decay needs k >= 1, got {self.k}")

    def __call__(self, i: int) -> float:
        if self.kind == "constant":
            return self.k
        if self.kind == "linear":
            return max(self.eps_min, self.k - self.c * i)
        if self.kind == "exponential":
            return max(self.eps_min, self.k**i)
        return max(self.eps_min, self.k / (self.k + math.exp(min(i / self.k, 700.0))))


def mix_tokens(ground_truth: Any, sampled: Any, eps: float) -> numpy.ndarray:
    """Per token, the ground truth with probability ``eps``, else the model's own sample."""
    gt, sm = numpy.asarray(ground_truth), numpy.asarray(sampled)
    if gt.shape != sm.shape:
        raise ValueError(f"mix_tokens: ground truth {gt.shape} and samples {sm.shape} differ in shape")
    keep = get_rng().random(gt.shape) < eps
    return numpy.where(keep, gt, sm)
