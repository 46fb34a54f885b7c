"""Gradient clipping: ``clip_grad_norm_`` (rescale all gradients together) and ``clip_grad_value_``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor


def _grad_list(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale every gradient by ``min(1, max_norm / (total_norm + 1e-6))`` in place, where ``total_norm`` is the
    ``norm_type``-norm of all gradients concatenated (``inf`` = max |g|). Returns ``total_norm`` as a 0-d
    Tensor (the norm BEFORE clipping, as PyTorch). Parameters without a gradient are skipped.
    """
    grads = [p.grad for p in _grad_list(parameters)]
    norm_type = float(norm_type)
    if not grads:
        return Tensor(0.0)
    xp = get_array_module(grads[0].array)
    dtype = grads[0].array.dtype
    if math.isinf(norm_type):
        total = max(float(xp.abs(g.array).max()) if g.array.size else 0.0 for g in grads)
    else:
        # the norm of the per-tensor norms equals the norm of the concatenation
        per = [float(xp.linalg.norm(g.array.ravel(), ord=norm_type)) if g.array.size else 0.0 for g in grads]
        total = float(sum(v**norm_type for v in per) ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} for gradients from {len(grads)} parameters is "
            "non-finite, so it cannot be clipped. To disable this error and scale the gradients by the non-finite "
            "norm anyway, set error_if_nonfinite=False"
        )
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.array *= coef
    return Tensor(xp.asarray(total, dtype=dtype))


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    for p in _grad_list(parameters):
        xp = get_array_module(p.grad.array)
        xp.clip(p.grad.array, -clip_value, clip_value, out=p.grad.array)
