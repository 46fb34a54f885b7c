"""Embedding lookup and one-hot encoding.

embedding:  y[..., :] = W[idx[...], :];  dW[v] = sum over positions with idx == v of dy (a scatter-add),
with dW[padding_idx] = 0 and, with ``scale_grad_by_freq``, row v divided by how often v occurs.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor


class EmbeddingFunction(Function):
    """y = W[idx] for an integer array idx (*) and W (V, D): y (*, D). dW is a sorted segment sum of dy."""

    def __init__(self, idx: Any, padding_idx: int | None, scale_grad_by_freq: bool) -> None:
        self.idx, self.padding_idx, self.scale = idx, padding_idx, scale_grad_by_freq

    def forward(self, w: Any) -> Any:
        self.w_shape = w.shape
        return w[self.idx]

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        v, d = self.w_shape
        flat = self.idx.reshape(-1)
        g = gy.reshape(-1, d)
        gw = xp.zeros((v, d), gy.dtype)
        if flat.size:
            # scatter-add without ufunc.at: sort the rows by index, then one reduceat per run of equal indices
            order = xp.argsort(flat, kind="stable")
            sf = flat[order]
            starts = xp.flatnonzero(xp.concatenate([xp.ones(1, bool), sf[1:] != sf[:-1]]))
            rows = sf[starts]
            sums = xp.add.reduceat(g[order], starts, axis=0)
            if self.scale:
                counts = xp.diff(xp.concatenate([starts, xp.asarray([sf.size])]))
                sums /= counts[:, None]
            gw[rows] = sums
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` (V, D) picked by the integer tensor ``input`` (*): output (*, D), as
    ``torch.nn.functional.embedding``. The row ``padding_idx`` gets no gradient. With ``max_norm``, each
    looked-up row whose ``norm_type``-norm exceeds it is rescaled in place to norm max_norm (as PyTorch,
    outside autograd). ``sparse=True`` is not supported (handgrad has dense gradients only)."""
    op = "embedding"
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: weight must be a Tensor, got {type(weight).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    if isinstance(input, Tensor) and input.device != weight.device:
        raise RuntimeError(f"{op}: the indices are on {input.device} but the weight is on {weight.device}; "
                           "move them with .to(device)")
    # host data (lists, NumPy arrays) is sent to the weight's device, as an index is for x[index]
    idx = input.array if isinstance(input, Tensor) else weight.device.send(numpy.asarray(input))
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{op}: input must hold integer indices, got dtype {idx.dtype}")
    v = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= v):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise IndexError(f"{op}: index {bad} is out of range for weight of shape {weight.shape}")
    if padding_idx is not None:
        if not -v <= padding_idx < v:
            raise ValueError(f"{op}: padding_idx {padding_idx} must be within num_embeddings ({v})")
        padding_idx = padding_idx % v
    if sparse:
        raise NotImplementedError(f"{op}: sparse=True is not supported; handgrad gradients are dense")
    if max_norm is not None:
        with no_grad():
            _renorm_rows(weight.array, idx, float(max_norm), float(norm_type))
    return EmbeddingFunction(idx, padding_idx, bool(scale_grad_by_freq))(weight)


def _renorm_rows(w: Any, idx: Any, max_norm: float, norm_type: float) -> None:
    """PyTorch's embedding_renorm_: rows r in idx with ||W[r]||_p > max_norm are scaled by
    max_norm / (||W[r]||_p + 1e-7), in place."""
    xp = get_array_module(w)
    rows = xp.unique(idx.reshape(-1))
    norms = xp.linalg.norm(w[rows], ord=norm_type, axis=1)
    big = norms > max_norm
    if bool(big.any()):
        w[rows[big]] *= (max_norm / (norms[big] + 1e-7))[:, None].astype(w.dtype)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """(*,) int64 class indices -> (*, num_classes) int64 one-hot, as ``torch.nn.functional.one_hot``.
    ``num_classes=-1`` means max(tensor) + 1. No gradient flows (the output is integer)."""
    op = "one_hot"
    a = tensor.array if isinstance(tensor, Tensor) else numpy.asarray(tensor)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected an integer tensor of class indices, got dtype {a.dtype}")
    xp = get_array_module(a)
    if a.size and int(a.min()) < 0:
        raise ValueError(f"{op}: class values must be non-negative, got {int(a.min())} in a tensor of shape {a.shape}")
    if num_classes == -1:
        if a.size == 0:
            raise ValueError(f"{op}: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = int(a.max()) + 1
    elif num_classes < 1:
        raise ValueError(f"{op}: num_classes must be positive or -1, got {num_classes}")
    elif a.size and int(a.max()) >= num_classes:
        raise ValueError(f"{op}: class values must be smaller than num_classes ({num_classes}), got {int(a.max())}")
    out = (a[..., None] == xp.arange(num_classes)).astype(numpy.int64)
    return Tensor(out)


__all__ = ["embedding", "one_hot"]
