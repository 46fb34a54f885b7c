"""Attention over encoder outputs: additive (Bahdanau et al. 2015) and multiplicative (Luong et al. 2015).

At decoder step t with state q (the query), every encoder output k_s gets a score e_s, the scores are
normalised over the source positions that are not padding, and the context is the weighted mean of the
encoder outputs:

    additive:        e_s = v^T tanh(W_q q + W_k k_s)        (W_k k_s is computed once per source)
    multiplicative:  e_s = q^T W k_s                         ("general"; ``W = I`` gives "dot")
    a = softmax(e) over s with a_s = 0 where the source is padding,   c = sum_s a_s k_s

Shapes: q (B, Q) for one step or (B, T, Q) for T decoder steps at once (teacher forcing), keys K (B, S, D),
mask (B, S) True where the source is real; a (B, S) or (B, T, S), c (B, D) or (B, T, D).
The score-and-softmax part of each is ONE fused op with its backward derived by hand:

    softmax VJP:  de_s = a_s (da_s - sum_r a_r da_r)       (zero on padding)
    additive:     u = tanh(z), z = P_k + p_q;  dz = (de v^T) * (1 - u^2);  dP_k = dz,  dp_q = sum_s dz,
                  dv = sum_{b,s} de_{bs} u_{bs}
    multiplicative: e = K r with r = W^T q (B, D);  dK = de r^T,  dr = K^T de
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


def _masked_softmax(e: Any, mask: Any) -> Any:
    xp = get_array_module(e)
    e = xp.where(mask, e, -xp.inf)
    e = e - e.max(axis=-1, keepdims=True)
    w = xp.exp(e)
    w /= w.sum(axis=-1, keepdims=True)
    return w


def _softmax_vjp(a: Any, ga: Any) -> Any:
    return a * (ga - (ga * a).sum(axis=-1, keepdims=True))  # zero wherever a is zero, i.e. on padding


class AdditiveScoresFunction(Function):
    """a = masked_softmax(tanh(P_k[:, None] + p_q[:, :, None]) @ v): p_q (B, T, A), P_k (B, S, A), v (A,)
    -> a (B, T, S). T is the number of decoder steps scored at once (1 when decoding step by step)."""

    def __init__(self, mask: Any) -> None:
        self.mask = mask[:, None, :]

    def forward(self, pq: Any, pk: Any, v: Any) -> Any:
        xp = get_array_module(pk)
        self.u = xp.tanh(pk[:, None, :, :] + pq[:, :, None, :])
        self.v = v
        self.a = _masked_softmax(self.u @ v, self.mask)
        return self.a

    def backward(self, ga: Any) -> Any:
        de = _softmax_vjp(self.a, ga)
        dz = de[..., None] * self.v * (1 - self.u * self.u)
        n = self.needs_input_grad
        gv = (de[..., None] * self.u).sum(axis=(0, 1, 2)) if n[2] else None
        return (dz.sum(axis=2) if n[0] else None), (dz.sum(axis=1) if n[1] else None), gv


class BilinearScoresFunction(Function):
    """a = masked_softmax(r K^T * scale): r (B, T, D) (the queries mapped into key space), K (B, S, D)
    -> a (B, T, S)."""

    def __init__(self, mask: Any, scale: float = 1.0) -> None:
        self.mask, self.scale = mask[:, None, :], scale

    def forward(self, r: Any, k: Any) -> Any:
        self.r, self.k = r, k
        self.a = _masked_softmax((r @ k.swapaxes(1, 2)) * self.scale, self.mask)
        return self.a

    def backward(self, ga: Any) -> Any:
        de = _softmax_vjp(self.a, ga) * self.scale
        n = self.needs_input_grad
        gr = de @ self.k if n[0] else None
        gk = de.swapaxes(1, 2) @ self.r if n[1] else None
        return gr, gk


def _check(op: str, q: Tensor, keys: Tensor, mask: Any) -> Any:
    if q.ndim not in (2, 3) or keys.ndim != 3 or q.shape[0] != keys.shape[0]:
        raise ValueError(
            f"{op}: expected query (B, Q) or (B, T, Q) and keys (B, S, D), got {q.shape} and {keys.shape}"
        )
    xp = get_array_module(keys.array)
    if mask is None:
        return xp.ones(keys.shape[:2], bool)
    m = mask.array if isinstance(mask, Tensor) else xp.asarray(mask)
    if m.shape != keys.shape[:2]:
        raise ValueError(f"{op}: mask {tuple(m.shape)} does not match keys {keys.shape[:2]}")
    if not bool(m.any(axis=1).all()):
        raise ValueError(f"{op}: a source sequence is all padding (nothing to attend to)")
    return m.astype(bool)


def _with_steps(query: Tensor) -> tuple[Tensor, bool]:
    """Queries as (B, T, Q); remember whether the caller gave a single step (B, Q)."""
    if query.ndim == 2:
        return query.reshape(query.shape[0], 1, query.shape[1]), True
    return query, False


def _context(a: Tensor, keys: Tensor, single: bool) -> tuple[Tensor, Tensor]:
    c = a @ keys  # (B, T, S) @ (B, S, D) -> (B, T, D)
    if single:
        return c.reshape(c.shape[0], c.shape[2]), a.reshape(a.shape[0], a.shape[2])
    return c, a


def _uniform(shape: tuple[int, ...], fan_in: int) -> Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    from handgrad.engine.backend import get_default_dtype

    return Parameter(get_rng().uniform(-bound, bound, shape).astype(get_default_dtype()))


class AdditiveAttention(Module):
    """Bahdanau attention: ``context, weights = attn(query, keys, mask)``.

    ``precompute(keys)`` returns W_k K (B, S, A) once per source sentence; pass it as ``projected_keys``
    at every decoder step to avoid recomputing it.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int) -> None:
        super().__init__()
        self.W_q = _uniform((query_size, attn_size), query_size)
        self.W_k = _uniform((key_size, attn_size), key_size)
        self.b = Parameter(get_rng().uniform(-0.1, 0.1, attn_size).astype(self.W_q.dtype))
        self.v = _uniform((attn_size,), attn_size)

    def precompute(self, keys: Tensor) -> Tensor:
        return keys @ self.W_k + self.b

    def forward(
        self, query: Tensor, keys: Tensor, mask: Any = None, projected_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        m = _check("AdditiveAttention", query, keys, mask)
        q, single = _with_steps(query)
        pk = self.precompute(keys) if projected_keys is None else projected_keys
        return _context(AdditiveScoresFunction(m)(q @ self.W_q, pk, self.v), keys, single)


class MultiplicativeAttention(Module):
    """Luong attention, ``score = q^T W k`` ("general"), or ``q^T k`` with ``kind="dot"``."""

    def __init__(self, query_size: int, key_size: int, kind: str = "general", scaled: bool = False) -> None:
        super().__init__()
        if kind not in ("general", "dot"):
            raise ValueError(f"MultiplicativeAttention: kind must be 'general' or 'dot', got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"MultiplicativeAttention: 'dot' needs query_size == key_size ({query_size} != {key_size})"
            )
        self.kind = kind
        self.scale = 1.0 / math.sqrt(key_size) if scaled else 1.0
        if kind == "general":
            self.W = _uniform((query_size, key_size), query_size)

    def forward(
        self, query: Tensor, keys: Tensor, mask: Any = None, projected_keys: Any = None
    ) -> tuple[Tensor, Tensor]:
        m = _check("MultiplicativeAttention", query, keys, mask)
        q, single = _with_steps(query)
        r = q @ self.W if self.kind == "general" else q
        return _context(BilinearScoresFunction(m, self.scale)(r, keys), keys, single)

    def precompute(self, keys: Tensor) -> None:
        return None
