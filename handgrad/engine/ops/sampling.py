"""``multinomial``: category indices drawn from (unnormalised) weights, from handgrad's seeded generator."""

from __future__ import annotations

from typing import Any

from handgrad.engine.backend import device_of_array, get_array_module
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor


def multinomial(input: Tensor, num_samples: int, replacement: bool = False,  # noqa: A002 - torch name
                *, generator: Any = None) -> Tensor:
    """``num_samples`` indices per row of ``input`` (1-D: one row; 2-D: one draw per row), category ``i``
    with probability ``w_i / sum w``. Without replacement each index appears at most once per row (drawn
    one after another from the remaining weights, as PyTorch does), so ``num_samples`` may not exceed the
    number of categories with non-zero weight. int64, no gradient. ``generator`` may be a NumPy Generator.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial: expected a Tensor, got {type(input).__name__}")
    if input.ndim not in (1, 2):
        raise ValueError(f"multinomial: expected a 1-D or 2-D tensor of weights, got shape {input.shape}")
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
    w = input.numpy().astype("float64").reshape(-1, input.shape[-1])
    xp = get_array_module(w)
    if not xp.isfinite(w).all() or (w < 0).any():
        raise ValueError("multinomial: weights must be finite and non-negative")
    sums = w.sum(axis=1)
    if (sums <= 0).any():
        raise ValueError("multinomial: every row of weights must have a positive sum")
    n_cat = w.shape[1]
    if not replacement and num_samples > int((w > 0).sum(axis=1).min()):
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from "
                         f"{int((w > 0).sum(axis=1).min())} categories with non-zero weight")
    rng = generator if generator is not None else get_rng()
    out = xp.empty((w.shape[0], num_samples), dtype="int64")
    for r in range(w.shape[0]):
        p = w[r] / sums[r]
        if replacement:
            # inverse CDF of uniform draws: one vectorised pass per row
            cdf = p.cumsum()
            idx = xp.searchsorted(cdf, rng.random(num_samples) * cdf[-1], side="right")
            out[r] = xp.minimum(idx, n_cat - 1)
        else:
            # Gumbel top-k: the k largest of log p + Gumbel noise are a draw without replacement
            with xp.errstate(divide="ignore"):
                keys = xp.log(p) - xp.log(-xp.log(rng.random(n_cat)))
            out[r] = xp.argsort(-keys, kind="stable")[:num_samples]
    res = out if input.ndim == 2 else out[0]
    dev = device_of_array(input.array)
    t = Tensor._from_op(res, None, 0)
    return t if dev == device_of_array(res) else t.to(dev)
