"""Vector norms: ``linalg.vector_norm``, ``linalg.norm`` (vector orders and 'fro') and ``norm``.

||x||_p = (sum |x|^p)^(1/p) over ``dim`` (all elements when None), with the limits p = inf (max |x|),
-inf (min |x|) and p = 0 (the count of non-zeros). Gradients, as PyTorch's:

* p = 2: dx = gy x / ||x|| (0 where the norm is 0);  p = 1: dx = gy sign(x);
* general p: dx = gy x |x|^(p-2) / ||x||^(p-1) (0 where the norm is 0);
* p = +-inf: gy sign(x) split evenly among the elements that attain the max (min);  p = 0: no gradient.
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.function import Function
from handgrad.engine.ops.reduction import normalize_axes
from handgrad.engine.tensor import Tensor


class VectorNormFunction(Function):
    """y = ||x||_ord over ``axes`` (all when None); the backward is in the module docstring."""

    def __init__(self, ord: float, axes: tuple[int, ...] | None, keepdims: bool) -> None:  # noqa: A002
        self.ord, self.axes, self.keepdims = ord, axes, keepdims

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        p, ax = self.ord, self.axes
        a = xp.abs(x)
        if p == 2:
            y = xp.sqrt((x * x).sum(axis=ax, keepdims=True))
        elif p == 1:
            y = a.sum(axis=ax, keepdims=True)
        elif p == math.inf:
            y = a.max(axis=ax, keepdims=True)
        elif p == -math.inf:
            y = a.min(axis=ax, keepdims=True)
        elif p == 0:
            y = (x != 0).sum(axis=ax, keepdims=True).astype(x.dtype)
        else:
            y = (a ** p).sum(axis=ax, keepdims=True) ** (1.0 / p)
        self.x, self.yk = x, y
        y = xp.asarray(y)
        if self.keepdims:
            return y
        return y.reshape(()) if ax is None else y.squeeze(ax)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        x, y, p = self.x, self.yk, self.ord
        g = gy if self.keepdims else (gy.reshape(y.shape))
        zero = y == 0
        if p == 0:
            return xp.zeros_like(x)
        if p == 1:
            return g * xp.sign(x)
        if p == 2:
            return g * x / xp.where(zero, 1, y) * ~zero
        if p in (math.inf, -math.inf):
            hit = xp.abs(x) == y
            count = hit.sum(axis=self.axes, keepdims=True).astype(gy.dtype)
            return g * xp.sign(x) * hit / count
        a = xp.abs(x)
        scale = g / xp.where(zero, 1, y) ** (p - 1) * ~zero
        return scale * x * a ** (p - 2) if p >= 2 else scale * xp.sign(x) * a ** (p - 1)


def _ord(op: str, ord: Any) -> float:  # noqa: A002
    if isinstance(ord, str):
        raise ValueError(f"{op}: ord {ord!r} is a matrix norm; only vector norms (a number or +-inf) and 'fro' "
                         "are supported")
    try:
        return float(ord)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: ord must be a number or +-inf, got {ord!r}") from None


def vector_norm(x: Tensor, ord: Any = 2, dim: Any = None, keepdim: bool = False, *,  # noqa: A002
                dtype: Any = None) -> Tensor:
    """``torch.linalg.vector_norm``: the ``ord``-norm of ``x`` over ``dim`` (all elements when None)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"vector_norm: expected a Tensor, got {type(x).__name__}")
    if dtype is not None:
        x = x.to(to_dtype(dtype, "vector_norm"))
    if x.dtype.kind != "f":
        raise TypeError(f"vector_norm: expected a floating tensor, got dtype {x.dtype}")
    p = _ord("vector_norm", ord)
    axes = normalize_axes(dim, x.ndim, "vector_norm")
    if p < 0 and x.numel() == 0:
        raise ValueError(f"vector_norm: a negative ord ({p}) of an empty tensor is undefined")
    return VectorNormFunction(p, axes, keepdim)(x)


def linalg_norm(x: Tensor, ord: Any = None, dim: Any = None, keepdim: bool = False, *,  # noqa: A002
                dtype: Any = None) -> Tensor:
    """``torch.linalg.norm``: with ``ord=None`` the 2-norm over ``dim`` (of the flattened tensor when
    ``dim`` is None), ``'fro'`` the same over two dims; a number is a vector norm over a single ``dim`` (or a
    1-D input). Matrix orders (``'nuc'``, and numbers over two dims) are refused in one line."""
    if ord is None or ord == "fro":
        if ord == "fro" and dim is not None and len((dim,) if isinstance(dim, int) else tuple(dim)) != 2:
            raise ValueError(f"linalg.norm: ord='fro' needs two dims, got dim={dim!r}")
        return vector_norm(x, 2, dim, keepdim, dtype=dtype)
    two_dims = (dim is None and isinstance(x, Tensor) and x.ndim == 2) or (
        dim is not None and not isinstance(dim, int) and len(tuple(dim)) == 2)
    if two_dims or isinstance(ord, str):
        raise ValueError(f"linalg.norm: the matrix norm ord={ord!r} is not supported (vector orders and 'fro' "
                         "are); use linalg.vector_norm for an element-wise norm")
    if dim is None and isinstance(x, Tensor) and x.ndim > 2:
        raise ValueError(f"linalg.norm: a numeric ord over a {x.ndim}-D input needs dim")
    return vector_norm(x, ord, dim, keepdim, dtype=dtype)


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False,  # noqa: A002
         dtype: Any = None) -> Tensor:
    """``torch.norm``: ``p='fro'`` (default) or a number, over ``dim`` (all elements when None): the vector
    ``p``-norm of those elements (``'fro'`` = 2)."""
    if p is None or p == "fro":
        p = 2
    if isinstance(p, str):
        raise ValueError(f"norm: p={p!r} is not supported (numbers, +-inf and 'fro' are)")
    return vector_norm(input, p, dim, keepdim, dtype=dtype)
