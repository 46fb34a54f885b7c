"""Matrix norms: ``linalg.matrix_norm`` (and the matrix branch of ``linalg.norm`` / ``norm(p='nuc')``).

Over the last two axes of a (..., m, n) array A (the public function moves the chosen ``dim`` pair there):

* 'fro':  sqrt(sum a_ij^2)  (the vector 2-norm of the elements; ``norm.vector_norm`` computes it);
* 'nuc':  sum_i s_i,  the sum of the singular values;  dA = U V^T  (reduced SVD A = U diag(s) V^T);
* 2 / -2: max_i s_i / min_i s_i;  dA = sum over the singular values attaining it of u_i v_i^T / (their count);
* 1 / -1: max_j / min_j sum_i |a_ij|  (column sums);  inf / -inf: max_i / min_i sum_j |a_ij|  (row sums);
  dA = sign(a) on the columns (rows) attaining it, divided by their count.

The gradients are PyTorch's: its ``matrix_norm`` is ``amax``/``amin`` of ``svdvals`` or of the abs sums, and
the backward of ``amax``/``amin`` splits the gradient evenly among ties (a subgradient; sign(0) = 0).
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.dtypes import to_dtype
from handgrad.engine.function import Function
from handgrad.engine.ops.norm import vector_norm
from handgrad.engine.ops.shape import norm_dim
from handgrad.engine.tensor import Tensor

_SVD_ORDS = ("nuc", 2.0, -2.0)
_SUM_ORDS = (1.0, -1.0, math.inf, -math.inf)


class MatrixNormFunction(Function):
    """y[...] = ||A[..., :, :]||_ord for ord in 'nuc', 2, -2, 1, -1, inf, -inf; the backward is in the module
    docstring."""

    def __init__(self, ord: Any) -> None:  # noqa: A002 - torch's name
        self.ord = ord

    def forward(self, a: Any) -> Any:
        xp = get_array_module(a)
        o = self.ord
        self.a = a
        if o in _SVD_ORDS:
            if self.needs_input_grad[0]:
                self.u, s, self.vh = xp.linalg.svd(a, full_matrices=False)
            else:
                s = xp.linalg.svd(a, compute_uv=False)
            self.s = s
            if o == "nuc":
                return xp.asarray(s.sum(axis=-1))
            return xp.asarray(s.max(axis=-1) if o == 2.0 else s.min(axis=-1))
        sums = xp.abs(a).sum(axis=-2 if o in (1.0, -1.0) else -1)  # column sums (1, -1) or row sums (inf, -inf)
        self.sums = sums
        return xp.asarray(sums.max(axis=-1) if o > 0 else sums.min(axis=-1))

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        o = self.ord
        g = gy[..., None]  # one value per matrix, broadcast along its singular values / sums
        if o in _SVD_ORDS:
            s = self.s
            if o == "nuc":
                w = xp.broadcast_to(g, s.shape)
            else:
                hit = s == (s.max(axis=-1, keepdims=True) if o == 2.0 else s.min(axis=-1, keepdims=True))
                w = g * hit / hit.sum(axis=-1, keepdims=True).astype(gy.dtype)
            return (self.u * w[..., None, :]) @ self.vh  # U diag(w) V^T
        sums = self.sums
        hit = sums == (sums.max(axis=-1, keepdims=True) if o > 0 else sums.min(axis=-1, keepdims=True))
        w = g * hit / hit.sum(axis=-1, keepdims=True).astype(gy.dtype)
        w = w[..., None, :] if o in (1.0, -1.0) else w[..., :, None]  # per column, or per row
        return xp.sign(self.a) * w


def _matrix_ord(op: str, ord: Any) -> Any:  # noqa: A002
    if isinstance(ord, str):
        if ord in ("fro", "nuc"):
            return ord
        raise ValueError(f"{op}: Order {ord} not supported (matrix orders: 'fro', 'nuc', 2, -2, 1, -1, inf, -inf)")
    try:
        o = float(ord)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: ord must be 'fro', 'nuc' or a number, got {ord!r}") from None
    if o not in _SVD_ORDS + _SUM_ORDS:
        raise ValueError(f"{op}: Order {ord} not supported (matrix orders: 'fro', 'nuc', 2, -2, 1, -1, inf, -inf)")
    return o


def _dims(op: str, dim: Any, ndim: int) -> tuple[int, int]:
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dims) != 2:
        raise ValueError(f"{op}: dim must be a 2-tuple, got {dim!r}")
    d0, d1 = norm_dim(op, dims[0], ndim), norm_dim(op, dims[1], ndim)
    if d0 == d1:
        raise ValueError(f"{op}: dims must be different, got {dim!r}")
    return d0, d1


def matrix_norm(A: Tensor, ord: Any = "fro", dim: Any = (-2, -1), keepdim: bool = False, *,  # noqa: A002, N803
                dtype: Any = None) -> Tensor:
    """``torch.linalg.matrix_norm``: the ``ord``-norm of the matrices spanned by the two axes ``dim`` of ``A``
    (batched over the others): 'fro', 'nuc', 2, -2, 1, -1, inf, -inf (see the module docstring)."""
    op = "linalg.matrix_norm"
    if not isinstance(A, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(A).__name__}")
    if dtype is not None:
        A = A.to(to_dtype(dtype, op))
    if A.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating tensor, got dtype {A.dtype}")
    if A.ndim < 2:
        raise ValueError(f"{op}: The input tensor A must have at least 2 dimensions, got shape {A.shape}")
    o = _matrix_ord(op, ord)
    d0, d1 = _dims(op, dim, A.ndim)
    if o == "fro":
        return vector_norm(A, 2, (d0, d1), keepdim)
    m, n = A.shape[d0], A.shape[d1]
    if m == 0 or n == 0:
        if o in (2.0, "nuc"):  # as PyTorch: the norm of an empty matrix is 0
            return vector_norm(A, 2, (d0, d1), keepdim)
        raise ValueError(f"{op}: ord={ord} of an empty matrix (shape {A.shape}, dims {(d0, d1)}) is undefined")
    rest = [d for d in range(A.ndim) if d not in (d0, d1)]
    perm = (*rest, d0, d1)
    x = A if perm == tuple(range(A.ndim)) else A.permute(*perm)
    y = MatrixNormFunction(o)(x)
    if keepdim:
        for d in sorted((d0, d1)):
            y = y.unsqueeze(d)
    return y
