"""Decoding a sequence from a model with output feedback: greedy, sampling, batched beam search.

Every decoder is driven by a step function, so any model fits:

    step(tokens, state) -> (log_probs, new_state)

``tokens`` (N,) int64 are the previous outputs (``bos_id`` first), ``log_probs`` (N, V) the log-distribution
of the next symbol (a Tensor or array), ``state`` anything whose arrays have the hypotheses along one axis;
``select(state, index)`` picks/reorders hypotheses (default: index axis 0 of every array or Tensor in
nested tuples/lists/dicts; pass your own for LSTM states laid out (layers, N, H)).

Beam search keeps, for each batch element, the k best prefixes by total log-probability
sum_t log p(y_t | y_<t, x). Finished hypotheses (that emitted ``<eos>``) stay in the beam with their score
frozen, so with k at least the number of possible sequences the result is the exact maximum-likelihood
sequence. ``length_penalty`` alpha ranks the finished hypotheses by score / len^alpha (0 = none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor

StepFn = Callable[[numpy.ndarray, Any], tuple[Any, Any]]


def select_axis0(state: Any, index: numpy.ndarray) -> Any:
    """Pick rows ``index`` along axis 0 of every array/Tensor inside ``state``."""
    if state is None:
        return None
    if isinstance(state, Tensor):  # the host index goes where the state is
        return Tensor(state.array[get_array_module(state.array).asarray(index)])
    if isinstance(state, numpy.ndarray):
        return state[index]
    if isinstance(state, tuple):
        return tuple(select_axis0(s, index) for s in state)
    if isinstance(state, list):
        return [select_axis0(s, index) for s in state]
    if isinstance(state, dict):
        return {k: select_axis0(v, index) for k, v in state.items()}
    return state


def _logp(x: Any) -> numpy.ndarray:
    return numpy.asarray(x.array if isinstance(x, Tensor) else x, dtype=numpy.float64)


def _trim(seq: list[int], eos_id: int) -> list[int]:
    return seq[: seq.index(eos_id)] if eos_id in seq else seq


@no_grad()
def greedy_decode(step: StepFn, state: Any, batch_size: int, bos_id: int, eos_id: int, max_len: int) -> list[list[int]]:
    """Most likely symbol at each step (not the most likely sequence), until ``<eos>`` or ``max_len``."""
    tokens = numpy.full(batch_size, bos_id, numpy.int64)
    out = numpy.zeros((batch_size, max_len), numpy.int64)
    done = numpy.zeros(batch_size, bool)
    for t in range(max_len):
        logp, state = step(tokens, state)
        tokens = _logp(logp).argmax(axis=1)
        out[:, t] = numpy.where(done, eos_id, tokens)
        done |= tokens == eos_id
        if done.all():
            break
    return [_trim(list(map(int, row)), eos_id) for row in out]


@no_grad()
def sample_decode(
    step: StepFn, state: Any, batch_size: int, bos_id: int, eos_id: int, max_len: int,
    temperature: float = 1.0, top_k: int | None = None,
) -> list[list[int]]:
    """Draw y_t ~ p(y_t | y_<t)^(1/T), optionally restricted to the ``top_k`` most likely symbols."""
    if temperature <= 0:
        raise ValueError(f"sample_decode: temperature must be > 0, got {temperature}")
    rng = get_rng()
    tokens = numpy.full(batch_size, bos_id, numpy.int64)
    out = numpy.full((batch_size, max_len), eos_id, numpy.int64)
    done = numpy.zeros(batch_size, bool)
    for t in range(max_len):
        logp, state = step(tokens, state)
        z = _logp(logp) / temperature
        if top_k is not None and top_k < z.shape[1]:
            kth = numpy.partition(z, -top_k, axis=1)[:, -top_k][:, None]
            z = numpy.where(z >= kth, z, -numpy.inf)
        p = numpy.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((batch_size, 1))
        tokens = numpy.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
        out[:, t] = numpy.where(done, eos_id, tokens)
        done |= tokens == eos_id
        if done.all():
            break
    return [_trim(list(map(int, row)), eos_id) for row in out]


@dataclass
class Hypothesis:
    tokens: list[int]
    log_prob: float
    score: float  # log_prob / len^alpha, the ranking key
    finished: bool  # ended with <eos> (else cut at max_len or by early stopping)


@no_grad()
def beam_search(
    step: StepFn, state: Any, batch_size: int, bos_id: int, eos_id: int, max_len: int, beam_size: int = 5,
    length_penalty: float = 0.0, select: Callable[[Any, numpy.ndarray], Any] = select_axis0,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns, per batch element, its hypotheses best first.

    ``state`` holds ``batch_size`` rows; it is expanded to ``batch_size * beam_size`` rows (beam b of
    element i at row i * beam_size + b) before the first step.
    """
    if beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be >= 1, got {beam_size}")
    B, k = batch_size, beam_size
    state = select(state, numpy.repeat(numpy.arange(B), k))
    scores = numpy.full((B, k), -numpy.inf)
    scores[:, 0] = 0.0  # one live beam per element at the start; the copies are placeholders
    seqs = numpy.zeros((B, k, 0), numpy.int64)
    finished = numpy.zeros((B, k), bool)
    tokens = numpy.full(B * k, bos_id, numpy.int64)
    for _ in range(max_len):
        logp, state = step(tokens, state)
        logp = _logp(logp).reshape(B, k, -1)
        V = logp.shape[2]
        # a finished hypothesis can only "continue" with eos at no cost, so it survives unchanged
        frozen = numpy.full(V, -numpy.inf)
        frozen[eos_id] = 0.0
        logp = numpy.where(finished[..., None], frozen, logp)
        cand = (scores[..., None] + logp).reshape(B, k * V)
        if k < k * V:
            top = numpy.argpartition(-cand, k - 1, axis=1)[:, :k]
        else:
            top = numpy.tile(numpy.arange(k * V), (B, 1))
        order = numpy.argsort(-numpy.take_along_axis(cand, top, axis=1), axis=1, kind="stable")
        top = numpy.take_along_axis(top, order, axis=1)
        beam, tok = top // V, top % V
        scores = numpy.take_along_axis(cand, top, axis=1)
        was_finished = numpy.take_along_axis(finished, beam, axis=1)
        seqs = numpy.concatenate([numpy.take_along_axis(seqs, beam[..., None], axis=1), tok[..., None]], axis=2)
        finished = was_finished | (tok == eos_id)
        rows = (numpy.arange(B)[:, None] * k + beam).reshape(-1)
        state = select(state, rows)
        tokens = tok.reshape(-1)
        live = numpy.isfinite(scores)
        if (finished | ~live).all():
            break
        # stop early once the best finished hypothesis beats every live one (scores only decrease)
        if length_penalty == 0.0:
            best_done = numpy.where(finished, scores, -numpy.inf).max(axis=1)
            best_open = numpy.where(~finished & live, scores, -numpy.inf).max(axis=1)
            if (best_done >= best_open).all():
                break
    results: list[list[Hypothesis]] = []
    for i in range(B):
        hyps = []
        for b in range(k):
            if not numpy.isfinite(scores[i, b]):
                continue
            toks = _trim(list(map(int, seqs[i, b])), eos_id)
            length = len(toks) + (1 if finished[i, b] else 0)
            score = float(scores[i, b]) / max(length, 1) ** length_penalty
            hyps.append(Hypothesis(toks, float(scores[i, b]), score, bool(finished[i, b])))
        hyps.sort(key=lambda h: -h.score)
        results.append(hyps)
    return results
