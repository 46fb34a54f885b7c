"""Matrix products."""

from __future__ import annotations

from typing import Any

from handgrad.engine.function import Function
from handgrad.engine.ops._util import unbroadcast
from handgrad.engine.tensor import Tensor


class MatMulFunction(Function):
    """C = A @ B (batched, broadcasting over leading axes);  dA = dC @ B^T, dB = A^T @ dC.

    1-D operands follow NumPy's rules (a vector is promoted to a matrix, then the added axis dropped).
    """

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a @ b

    def backward(self, gc: Any) -> Any:
        a, b = self.a, self.b
        n = self.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # the common case, without the general path's reshapes
            return (gc @ b.T if n[0] else None), (a.T @ gc if n[1] else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gc
        if a.ndim == 1:
            g2 = g2[..., None, :]
        if b.ndim == 1:
            g2 = g2[..., None]
        ga = gb = None
        if n[0]:
            ga = g2 @ b2.swapaxes(-1, -2)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if n[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # a weight shared across the batch: one GEMM over all leading axes, sum_n A_n^T dC_n
                gb = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


def matmul(a: Any, b: Any) -> Tensor:
    if not isinstance(a, Tensor):
        a = Tensor(a)
    if not isinstance(b, Tensor):
        b = Tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one dimension, got shapes {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({ka} != {kb})")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: operands have different dtypes {a.dtype} and {b.dtype}")
    return MatMulFunction()(a, b)
