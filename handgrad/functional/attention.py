"""Scaled dot-product attention as ONE fused op (``torch.nn.functional.scaled_dot_product_attention``).

For query Q (*, L, E), key K (*, S, E), value V (*, S, Ev) and an additive mask M (broadcastable to (*, L, S))::

    A = scale Q K^T + M                 (scale = 1 / sqrt(E) by default)
    P = softmax(A) over S               (a row whose entries are all -inf gives P = 0, as PyTorch's math path)
    D = P * R / (1 - p)                 (dropout: R ~ Bernoulli(1 - p), only when dropout_p > 0)
    O = D V                             -> (*, L, Ev)

and the backward, by hand (G = dL/dO, plus dL/dD when the weights are also an output)::

    dV = D^T G,   dD = G V^T (+ dL/dD),   dP = dD * R / (1 - p),
    dA = P * (dP - rowsum(dP * P)),       dQ = scale dA K,   dK = scale dA^T Q,   dM = dA (summed to M's shape)

A boolean ``attn_mask`` marks the positions that MAY be attended (True = keep), as in PyTorch; it is turned
into 0 / -inf. ``is_causal`` keeps position j <= i (top-left aligned when L != S).
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.factories import tensor
from handgrad.engine.function import Function
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor


def _sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Reduce a broadcast gradient back to ``shape``."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _ungroup(g: Any, groups: int, shape: tuple[int, ...]) -> Any:
    """The gradient of ``repeat(x, groups, axis=-3)``: sum each key/value head's query-head group."""
    return g.reshape(*shape[:-3], shape[-3], groups, *shape[-2:]).sum(axis=-3)


class ScaledDotProductAttentionFunction(Function):
    """Inputs (q, k, v[, mask]); outputs O, or (O, D) when ``return_weights`` (the attention weights after
    dropout, so a caller such as ``MultiheadAttention(need_weights=True)`` can return them and their
    gradient flows back through the same node)."""

    def __init__(self, scale: float, keep: Any, has_mask: bool, return_weights: bool, groups: int = 1) -> None:
        self.scale, self.keep, self.has_mask, self.return_weights = scale, keep, has_mask, return_weights
        self.groups = groups  # grouped-query attention: each key/value head serves this many query heads

    def forward(self, q: Any, k: Any, v: Any, mask: Any = None) -> Any:
        xp = get_array_module(q)
        self.kv_shapes = (k.shape, v.shape)
        if self.groups > 1:  # key/value head j serves query heads j*g .. j*g+g-1 (repeat_interleave)
            k, v = xp.repeat(k, self.groups, axis=-3), xp.repeat(v, self.groups, axis=-3)
        a = (q @ xp.swapaxes(k, -1, -2)) * q.dtype.type(self.scale)
        if mask is not None:
            a = a + mask
        amax = a.max(axis=-1, keepdims=True)
        dead = ~xp.isfinite(amax)  # rows with nothing to attend to
        if dead.any():
            amax = xp.where(dead, 0, amax)
        p = xp.exp(a - amax)
        denom = p.sum(axis=-1, keepdims=True)
        if dead.any():
            denom = xp.where(dead, 1, denom)
        p /= denom
        d = p * self.keep if self.keep is not None else p
        out = d @ v
        self.q, self.k, self.v, self.p, self.d = q, k, v, p, d
        self.mask_shape = None if mask is None else mask.shape
        return (out, d) if self.return_weights else out

    def backward(self, gout: Any, gd: Any = None) -> Any:
        xp = get_array_module(self.p)
        need = self.needs_input_grad
        q, k, v, p = self.q, self.k, self.v, self.p
        if gout is None:
            gout = xp.zeros(self.p.shape[:-1] + (v.shape[-1],), p.dtype)
        gv = _sum_to(xp.swapaxes(self.d, -1, -2) @ gout, v.shape) if need[2] else None
        if gv is not None and self.groups > 1:
            gv = _ungroup(gv, self.groups, self.kv_shapes[1])
        gdd = gout @ xp.swapaxes(v, -1, -2)
        if gd is not None:
            gdd = gdd + gd
        if self.keep is not None:
            gdd = gdd * self.keep
        ga = p * (gdd - (gdd * p).sum(axis=-1, keepdims=True))
        s = p.dtype.type(self.scale)
        gq = _sum_to((ga @ k) * s, q.shape) if need[0] else None
        gk = _sum_to((xp.swapaxes(ga, -1, -2) @ q) * s, k.shape) if need[1] else None
        if gk is not None and self.groups > 1:
            gk = _ungroup(gk, self.groups, self.kv_shapes[0])
        if not self.has_mask:
            return gq, gk, gv
        gm = _sum_to(ga, self.mask_shape) if need[3] else None
        return gq, gk, gv, gm


def _additive_mask(op: str, attn_mask: Any, is_causal: bool, L: int, S: int, like: Tensor) -> Tensor | None:
    """The mask as an additive float Tensor (bool True = keep -> 0, False -> -inf), causal part included."""
    xp = get_array_module(like.array)
    neg_inf = like.dtype.type(-math.inf)
    if is_causal:
        if attn_mask is not None:
            raise ValueError(f"{op}: pass either attn_mask or is_causal=True, not both")
        keep = xp.tril(xp.ones((L, S), dtype=bool))
        return Tensor(xp.where(keep, like.dtype.type(0), neg_inf))
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, Tensor):  # host data: onto the scores' device
        attn_mask = tensor(attn_mask, device=like.device)
    if attn_mask.ndim < 2 or attn_mask.shape[-2:] not in ((L, S), (1, S), (L, 1), (1, 1)):
        raise ValueError(
            f"{op}: attn_mask of shape {attn_mask.shape} is not broadcastable to the (..., L={L}, S={S}) scores"
        )
    if attn_mask.dtype.kind == "b":
        return Tensor(xp.where(attn_mask.array, like.dtype.type(0), neg_inf))
    if attn_mask.dtype != like.dtype:
        raise TypeError(f"{op}: a float attn_mask must have the query's dtype {like.dtype}, got {attn_mask.dtype}")
    return attn_mask


def _attention(op: str, query: Tensor, key: Tensor, value: Tensor, attn_mask: Any, dropout_p: float,
               is_causal: bool, scale: float | None, return_weights: bool, enable_gqa: bool = False) -> Any:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} must have at least 2 dimensions (..., seq, features), got {t.shape}")
        if t.dtype != query.dtype or t.dtype.kind != "f":
            raise TypeError(f"{op}: query, key and value must share one floating dtype, got "
                            f"{query.dtype}, {key.dtype}, {value.dtype}")
    L, E = query.shape[-2:]
    S = key.shape[-2]
    if key.shape[-1] != E:
        raise ValueError(f"{op}: query {query.shape} and key {key.shape} must have the same last dimension")
    if value.shape[-2] != S:
        raise ValueError(f"{op}: key {key.shape} and value {value.shape} must have the same sequence length")
    groups = 1
    if enable_gqa and query.ndim >= 3 and key.shape[:-2] == value.shape[:-2] and key.ndim == query.ndim \
            and key.shape[:-3] == query.shape[:-3] and key.shape[-3] and query.shape[-3] % key.shape[-3] == 0:
        groups = query.shape[-3] // key.shape[-3]
    elif query.shape[:-2] != key.shape[:-2] or key.shape[:-2] != value.shape[:-2]:
        hint = (" (enable_gqa needs the query heads, dim -3, to be a multiple of the key/value heads)"
                if enable_gqa else "")
        raise ValueError(f"{op}: query {query.shape}, key {key.shape}, value {value.shape} must have the same "
                         f"batch dimensions{hint}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    mask = _additive_mask(op, attn_mask, is_causal, L, S, query)
    if mask is not None and mask.ndim > query.ndim:
        raise ValueError(f"{op}: attn_mask {mask.shape} has more dimensions than the scores (..., {L}, {S})")
    keep = None
    if dropout_p > 0.0:
        shape = query.shape[:-2] + (L, S)
        draw = get_rng(query.device).random(shape) >= dropout_p  # drawn where the scores live
        keep = draw.astype(query.dtype) * query.dtype.type(1.0 / (1.0 - dropout_p))
    s = 1.0 / math.sqrt(E) if scale is None else float(scale)
    fn = ScaledDotProductAttentionFunction(s, keep, mask is not None, return_weights, groups)
    return fn(query, key, value) if mask is None else fn(query, key, value, mask)


def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Tensor:
    """softmax(Q K^T scale + mask) V, fused (one node, hand-written backward). query (*, L, E), key (*, S, E),
    value (*, S, Ev) -> (*, L, Ev). ``attn_mask``: bool (True = may attend) or float (added to the scores),
    broadcastable to (*, L, S); ``is_causal``: attend only to j <= i; ``dropout_p``: dropout on the weights
    (handgrad's generator, so the draws differ from PyTorch's); ``scale``: default 1/sqrt(E); ``enable_gqa``:
    key/value (*, Hkv, S, E) with fewer heads than query (*, Hq, L, E), Hq a multiple of Hkv (grouped-query
    attention: key/value head j serves query heads j*Hq/Hkv .. (j+1)*Hq/Hkv - 1)."""
    return _attention("scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, is_causal, scale,
                      False, enable_gqa)


def scaled_dot_product_attention_weights(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """As ``scaled_dot_product_attention`` but also returns the attention weights (after dropout), both
    from the same fused node: ``(output (*, L, Ev), weights (*, L, S))``."""
    return _attention("scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, is_causal, scale,
                      True)


__all__ = ["scaled_dot_product_attention", "scaled_dot_product_attention_weights"]
