"""Vector norms: ``linalg.vector_norm``, and ``linalg.norm`` / ``norm``, which hand matrix orders to
``linalg_matrix_norm.py``.

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
        raise ValueError(f"{op}: ord {ord!r} is a matrix norm; use linalg.matrix_norm (vector norms take a "
                         "number or +-inf)")
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
    """``torch.linalg.norm``: with ``ord=None`` the 2-norm over ``dim`` (of the flattened tensor when ``dim``
    is None); otherwise a matrix norm (``linalg.matrix_norm``: 'fro', 'nuc', 2, -2, 1, -1, inf, -inf) when
    ``dim`` is a pair, or ``dim`` is None and ``x`` is 2-D, and a vector norm over a single ``dim`` (or of
    a 1-D ``x``)."""
    op = "linalg.norm"
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if ord is None:
        return vector_norm(x, 2, dim, keepdim, dtype=dtype)
    if dim is None:
        if x.ndim not in (1, 2):
            raise ValueError(f"{op}: If dim is not specified but ord is, the input must be 1D or 2D. Got "
                             f"{x.ndim}D (shape {x.shape})")
        dim = (0,) if x.ndim == 1 else (0, 1)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dims) == 2:
        return _matrix.matrix_norm(x, ord, dims, keepdim, dtype=dtype)
    if len(dims) != 1:
        raise ValueError(f"{op}: dim must be an int or a pair of ints when ord is given, got {dim!r}")
    if isinstance(ord, str):
        raise ValueError(f"{op}: ord={ord!r} is a matrix norm and needs two dims (a 2-D input or dim=(d0, d1)), "
                         f"got dim={dim!r} for shape {x.shape}")
    return vector_norm(x, ord, dims, keepdim, dtype=dtype)


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False,  # noqa: A002
         dtype: Any = None) -> Tensor:
    """``torch.norm``: ``p='fro'`` (default) or a number is the vector ``p``-norm of the elements over ``dim``
    (all elements when None; 'fro' = 2); ``p='nuc'`` the nuclear norm of the matrices over ``dim`` (a pair,
    or a 2-D input)."""
    if p is None or p == "fro":
        p = 2
    if p == "nuc":
        if dim is None:
            if not isinstance(input, Tensor) or input.ndim != 2:
                raise ValueError(f"norm: p='nuc' without dim needs a 2-D input, got shape "
                                 f"{getattr(input, 'shape', None)}")
            dim = (0, 1)
        return _matrix.matrix_norm(input, "nuc", dim, keepdim, dtype=dtype)
    if isinstance(p, str):
        raise ValueError(f"norm: p={p!r} is not supported (numbers, +-inf, 'fro' and 'nuc' are)")
    return vector_norm(input, p, dim, keepdim, dtype=dtype)


# late import (the engine's rule for import cycles, see tensor.py): matrix norms use vector_norm for 'fro'
from handgrad.engine.ops import linalg_matrix_norm as _matrix  # noqa: E402
