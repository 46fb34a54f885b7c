"""Quantities that are exact for a model WITHOUT output feedback (the decks' list).

Without feedback the state sequence is a deterministic function of the input, so the outputs are
conditionally independent: p(o_1:T | x) = prod_t p(o_t | x_1:t). Given the per-step distributions
P (T, V) (or (B, T, V)) the model computes in one forward pass:

* the maximum-likelihood sequence is the per-step argmax;
* the marginal distribution of the n-th output symbol is P[n] itself;
* the probability that symbol s appears anywhere is 1 - prod_t (1 - P[t, s]).

(With output feedback none of these is available in closed form: they need a sum over all prefixes.)
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.tensor import Tensor


def _probs(p: Any) -> numpy.ndarray:
    a = numpy.asarray(p.array if isinstance(p, Tensor) else p, dtype=numpy.float64)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected per-step probabilities (T, V) or (B, T, V), got shape {a.shape}")
    if not numpy.allclose(a.sum(-1), 1.0, atol=1e-6) or (a < 0).any():
        raise ValueError("expected probabilities: non-negative and summing to 1 over the last axis")
    return a


def max_likelihood_sequence(probs: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(argmax sequence, its log-probability) — exact because the steps are independent."""
    p = _probs(probs)
    seq = p.argmax(-1)
    return seq, numpy.log(numpy.take_along_axis(p, seq[..., None], -1)[..., 0]).sum(-1)


def marginal_at(probs: Any, n: int) -> numpy.ndarray:
    """p(o_n = s | x) for every symbol s."""
    p = _probs(probs)
    T = p.shape[-2]
    if not -T <= n < T:
        raise IndexError(f"marginal_at: step {n} is outside a sequence of length {T}")
    return p[..., n, :]


def prob_appears(probs: Any) -> numpy.ndarray:
    """p(symbol s occurs at least once) = 1 - prod_t (1 - p_t(s)), for every s."""
    p = _probs(probs)
    return 1.0 - numpy.prod(1.0 - p, axis=-2)
