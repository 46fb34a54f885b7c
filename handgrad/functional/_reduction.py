"""The one loss-reduction helper: every loss ``Function`` reduces its per-element losses ``l`` with it.

    'none':  L = l                          dL/dl = gy                       (gy has l's shape)
    'sum':   L = sum_i l_i                  dL/dl_i = gy
    'mean':  L = sum_i l_i / n              dL/dl_i = gy / n

``n`` is the element count unless the loss passes its own denominator (a weighted cross-entropy divides by
the summed weights; an ignored target counts for nothing). ``n = 0`` gives ``nan``, as in PyTorch. Forward
and backward both live here so that a loss cannot reduce one way and differentiate another.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import get_array_module

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(op: str, reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    """Raise a ``ValueError`` naming ``op`` unless ``reduction`` is one of ``allowed``."""
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {', '.join(repr(a) for a in allowed)}, got {reduction!r}")


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's ``_Reduction.legacy_get_string``: the old pair of flags wins over ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        return "mean"
    return "sum" if reduce else "none"


def reduce_loss(l: Any, reduction: str, denom: Any = None) -> Any:
    """Apply ``reduction`` to the per-element loss array ``l``; ``denom`` overrides the count for 'mean'.

    The result keeps ``l``'s dtype and array module (a 0-d array for 'mean' and 'sum').
    """
    xp = get_array_module(l)
    if reduction == "none":
        return l
    s = l.sum()
    if reduction == "sum":
        return xp.asarray(s, dtype=l.dtype)
    d = l.size if denom is None else denom
    with numpy.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> nan, like PyTorch
        return xp.asarray(s / d, dtype=l.dtype)


def reduce_loss_backward(gy: Any, shape: tuple[int, ...], reduction: str, denom: Any = None) -> Any:
    """The gradient of ``reduce_loss`` with respect to every per-element loss: an array of ``shape``
    (a read-only broadcast view for 'mean' and 'sum'; do not write into it)."""
    xp = get_array_module(gy)
    if reduction == "none":
        return gy
    if reduction == "mean":
        n = int(numpy.prod(shape)) if denom is None else denom
        with numpy.errstate(invalid="ignore", divide="ignore"):
            gy = gy / n
    return xp.broadcast_to(gy, shape)
