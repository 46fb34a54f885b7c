"""``MultiheadAttention`` (Vaswani et al. 2017), with PyTorch's arguments, parameter names and masks.

    head_i = Attention(Q W_q^i, K W_k^i, V W_v^i),   out = concat(head_1..head_h) W_o^T + b_o

Each head's attention is one fused ``scaled_dot_product_attention`` node. Parameters as PyTorch's, so a
``torch.nn.MultiheadAttention`` state_dict loads as is: ``in_proj_weight`` (3E, E) and ``in_proj_bias``
(3E,) (or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim/vdim differ from E), and
``out_proj.weight``/``out_proj.bias``, and ``bias_k``/``bias_v`` (1, 1, E) with ``add_bias_kv`` (a learnt key and
value appended to every sequence; ``add_zero_attn`` appends a zero one after it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.engine.backend import get_array_module
from handgrad.engine.factories import tensor
from handgrad.engine.ops import cat, pad
from handgrad.engine.tensor import Tensor
from handgrad.functional.attention import scaled_dot_product_attention, scaled_dot_product_attention_weights
from handgrad.nn import init
from handgrad.nn._factory import param_dtype, place
from handgrad.nn.linear import Linear
from handgrad.nn.module import Module
from handgrad.nn.parameter import Parameter


def _to_additive(name: str, mask: Any, like: Tensor) -> Tensor | None:
    """A PyTorch-style MHA mask (bool: True = NOT allowed; float: added) as an additive float Tensor."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):  # host data (a NumPy mask): onto the scores' device
        mask = tensor(mask, device=like.device)
    if mask.dtype.kind == "b":
        xp = get_array_module(mask.array)
        return Tensor(xp.where(mask.array, like.dtype.type(-math.inf), like.dtype.type(0)))
    if mask.dtype.kind != "f":
        raise TypeError(f"MultiheadAttention: {name} must be bool or floating, got dtype {mask.dtype}")
    return mask if mask.dtype == like.dtype else mask.to(like.dtype)


class MultiheadAttention(Module):
    """query (L, N, E) [or (N, L, E) with ``batch_first``, or unbatched (L, E)], key (S, N, kdim), value
    (S, N, vdim) -> (attn_output of query's layout, attn_weights (N, L, S) averaged over heads, or
    (N, H, L, S) with ``average_attn_weights=False``, or None when ``need_weights=False``).

    ``key_padding_mask`` (N, S): True (or -inf) marks padding keys to ignore. ``attn_mask`` (L, S) or
    (N * num_heads, L, S): True marks a pair NOT allowed to attend, a float mask is added to the scores.
    ``is_causal=True`` without a mask uses the causal mask. ``dropout`` applies to the weights in training.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, add_bias_kv: bool = False,
        add_zero_attn: bool = False, kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
        device: Any = None, dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim ({embed_dim}) must be positive and divisible by num_heads ({num_heads})"
            )
        dt = param_dtype("MultiheadAttention", device, dtype)
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.dropout = float(dropout)
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.head_dim = embed_dim // num_heads
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(numpy.empty((3 * E, E), dt))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(numpy.empty((E, E), dt))
            self.k_proj_weight = Parameter(numpy.empty((E, self.kdim), dt))
            self.v_proj_weight = Parameter(numpy.empty((E, self.vdim), dt))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(numpy.empty((3 * E,), dt))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dt)
        if add_bias_kv:  # one learnt key and value appended to every sequence (a "sink" to attend to)
            self.bias_k = Parameter(numpy.empty((1, 1, E), dt))
            self.bias_v = Parameter(numpy.empty((1, 1, E), dt))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()
        place(self, device)

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def _projections(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:E], w[E:2 * E], w[2 * E:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        name = "MultiheadAttention"
        for what, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.ndim not in (2, 3):
                got = t.shape if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name}: {what} must be a 2-D (unbatched) or 3-D Tensor, got {got}")
        batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{name}: query {query.shape}, key {key.shape}, value {value.shape} must all be "
                             "batched (3-D) or all unbatched (2-D)")
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = (key_padding_mask if isinstance(key_padding_mask, Tensor)
                                    else tensor(key_padding_mask, device=query.device)).unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        L, N, E = query.shape
        S = key.shape[0]
        if E != self.embed_dim or key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ValueError(f"{name}: expected features (E={self.embed_dim}, kdim={self.kdim}, vdim={self.vdim}), "
                             f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}")
        if key.shape[:2] != value.shape[:2] or key.shape[1] != N:
            raise ValueError(f"{name}: key {tuple(key.shape)} and value {tuple(value.shape)} must match query's "
                             f"batch ({N}) and each other's length")
        H, hd = self.num_heads, self.head_dim
        q, k, v = self._projections(query, key, value)
        extra = 0  # key positions appended after the S given ones (bias_k/v, then a zero key/value)
        if self.bias_k is not None:
            k = cat([k, self.bias_k.expand(1, N, E)], 0)
            v = cat([v, self.bias_v.expand(1, N, E)], 0)
            extra += 1
        # (L, N, E) -> (N, H, L, hd): per position, the heads are consecutive slices of E (PyTorch's layout)
        q = q.reshape(L, N, H, hd).permute(1, 2, 0, 3)
        k = k.reshape(S + extra, N, H, hd).permute(1, 2, 0, 3)
        v = v.reshape(S + extra, N, H, hd).permute(1, 2, 0, 3)
        if self.add_zero_attn:
            zeros = Tensor(get_array_module(q.array).zeros((N, H, 1, hd), q.dtype))
            k, v = cat([k, zeros], 2), cat([v, zeros], 2)
            extra += 1

        mask = _to_additive("attn_mask", attn_mask, q)
        if mask is None and is_causal:
            xp = get_array_module(q.array)
            mask = Tensor(xp.where(xp.tril(xp.ones((L, S), dtype=bool)), q.dtype.type(0), q.dtype.type(-math.inf)))
        if mask is not None:
            if mask.shape == (L, S):
                mask = mask.reshape(1, 1, L, S)
            elif mask.shape == (N * H, L, S):
                mask = mask.reshape(N, H, L, S)
            else:
                raise ValueError(f"{name}: attn_mask must have shape ({L}, {S}) or ({N * H}, {L}, {S}), got "
                                 f"{tuple(mask.shape)}")
        kpm = _to_additive("key_padding_mask", key_padding_mask, q)
        if kpm is not None:
            if kpm.shape != (N, S):
                raise ValueError(f"{name}: key_padding_mask must have shape ({N}, {S}), got {tuple(kpm.shape)}")
            kpm = kpm.reshape(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        if mask is not None and extra:  # the appended keys are always visible
            mask = pad(mask, (0, extra))
        p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention_weights(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, N, E))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
