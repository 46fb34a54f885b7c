"""Matrix products: matmul, mm, bmm, einsum."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import get_array_module
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


def mm(input: Tensor, mat2: Tensor) -> Tensor:  # noqa: A002 - torch argument name
    """(n, m) @ (m, p) -> (n, p), 2-D operands only (no broadcasting), as ``torch.mm``."""
    if not isinstance(input, Tensor) or not isinstance(mat2, Tensor):
        raise TypeError("mm: expected two Tensors")
    if input.ndim != 2 or mat2.ndim != 2:
        raise ValueError(f"mm: expected 2-D tensors, got shapes {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:  # noqa: A002
    """(b, n, m) @ (b, m, p) -> (b, n, p), 3-D operands with equal batch sizes (no broadcasting)."""
    if not isinstance(input, Tensor) or not isinstance(mat2, Tensor):
        raise TypeError("bmm: expected two Tensors")
    if input.ndim != 3 or mat2.ndim != 3:
        raise ValueError(f"bmm: expected 3-D tensors, got shapes {input.shape} and {mat2.shape}")
    if input.shape[0] != mat2.shape[0]:
        raise ValueError(f"bmm: batch sizes differ: shapes {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


class EinsumFunction(Function):
    """y = einsum(spec, x_1, ..., x_k);  dx_i = einsum(gy and the other operands -> x_i's subscripts).

    The VJP of a sum of products: the gradient of operand i contracts gy with every other operand onto
    operand i's subscripts. Subscripts that appear only in operand i (summed out there) are absent from gy and
    the others, so the contraction leaves them out and the result is broadcast along them; a subscript
    repeated inside operand i (a diagonal, ``'ii->i'``) is written onto that diagonal of a zero array.
    """

    def __init__(self, inputs: list[str], output: str) -> None:
        self.ins, self.out = inputs, output

    def forward(self, *xs: Any) -> Any:
        xp = get_array_module(*xs)
        self.xs = xs
        return xp.asarray(xp.einsum(",".join(self.ins) + "->" + self.out, *xs, optimize=len(xs) > 2))

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        grads = []
        for i, (sub, x) in enumerate(zip(self.ins, self.xs)):
            if not self.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [s for j, s in enumerate(self.ins) if j != i]
            present = set(self.out).union(*others) if others else set(self.out)
            unique = "".join(dict.fromkeys(c for c in sub if c in present))
            spec = ",".join([self.out, *others]) + "->" + unique
            g = xp.einsum(spec, gy, *[x2 for j, x2 in enumerate(self.xs) if j != i], optimize=len(others) > 1)
            sizes = dict(zip(sub, x.shape))
            full = "".join(dict.fromkeys(sub))  # every distinct subscript of operand i, in order
            if unique != full:  # summed-out-only subscripts: broadcast along them
                g = _broadcast_to_subs(xp, g, unique, full, sizes)
            if full != sub:  # repeated subscripts: the gradient lives on the diagonal
                z = xp.zeros(x.shape, dtype=gy.dtype)
                xp.einsum(f"{sub}->{full}", z)[...] = g
                g = z
            grads.append(g.astype(x.dtype, copy=False))
        return tuple(grads)


def _broadcast_to_subs(xp: Any, g: Any, have: str, want: str, sizes: dict[str, int]) -> Any:
    """``g`` with subscripts ``have`` laid out as ``want`` (a superset), constant along the new ones."""
    shape = [sizes[c] if c in have else 1 for c in want]
    order = [have.index(c) for c in want if c in have]
    g = xp.transpose(g, order).reshape(shape)
    return xp.broadcast_to(g, [sizes[c] for c in want]).copy()


def _parse_einsum(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """Explicit subscripts for every operand and the output (ellipses expanded, implicit output made
    explicit as NumPy/PyTorch do: the subscripts seen once, in alphabetical order)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum: the equation {equation!r} names {len(ins)} operands but {len(shapes)} were given")
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used]
    n_ell = max((len(s) - (len(sub) - 3) for sub, s in zip(ins, shapes) if "..." in sub), default=0)
    ell = "".join(spare[:n_ell])
    out_ins = []
    for sub, s in zip(ins, shapes):
        if "..." in sub:
            k = len(s) - (len(sub) - 3)
            sub = sub.replace("...", ell[n_ell - k:])
        if not all(c.isalpha() for c in sub) or len(sub) != len(s):
            raise ValueError(f"einsum: subscripts {sub!r} do not match an operand of shape {tuple(s)}")
        out_ins.append(sub)
    if "->" in eq:
        out = rhs.replace("...", ell)
    else:
        counts = {c: "".join(out_ins).count(c) for c in set("".join(out_ins))}
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return out_ins, out


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation, ``torch.einsum(equation, *operands)`` (operands also as one list), e.g.
    ``einsum('bij,bjk->bik', a, b)``; differentiable in every floating operand."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(isinstance(t, Tensor) for t in operands):
        raise TypeError("einsum: expected Tensor operands")
    if len({t.dtype for t in operands}) > 1:
        raise TypeError(f"einsum: operands have different dtypes {[str(t.dtype) for t in operands]}")
    ins, out = _parse_einsum(equation, [t.shape for t in operands])
    sizes: dict[str, int] = {}
    for sub, t in zip(ins, operands):
        for c, n in zip(sub, t.shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum: subscript {c!r} has size {sizes[c]} in one operand and {n} in another "
                                 f"(equation {equation!r}, shapes {[t.shape for t in operands]})")
    return EinsumFunction(ins, out)(*operands)
