"""Adam and AdamW (decoupled weight decay), with AMSGrad and maximize, exactly as PyTorch computes them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.optim.optimizer import (
    Optimizer,
    _adam_moments,
    _adam_state,
    _check_betas,
    _check_hyper,
    _grads,
    _weight_decay,
)


class Adam(Optimizer):
    """For each parameter p with gradient g (negated if ``maximize``), at step t = 1, 2, ...::

        p <- p (1 - lr wd)          if decoupled_weight_decay (AdamW)   else   g <- g + wd p
        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        v_max <- max(v_max, v)       (amsgrad; used in place of v below)
        p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad).
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        name = type(self).__name__
        _check_hyper(name, lr=lr, eps=eps, weight_decay=weight_decay)
        _check_betas(name, betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            beta1, beta2 = group["betas"]
            for p, g in _grads(group):
                xp = get_array_module(p.array)
                state = self.state[p]
                g = _adam_state(group, state, p, g)
                if group["amsgrad"] and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = xp.zeros_like(p.array)
                t = state["step"]
                g = _weight_decay(group, p, g)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                _adam_moments(m, v, g, beta1, beta2)
                bias_correction1 = 1 - beta1**t
                bias_correction2_sqrt = math.sqrt(1 - beta2**t)
                if group["amsgrad"]:
                    vmax = state["max_exp_avg_sq"]
                    xp.maximum(vmax, v, out=vmax)
                    denom = xp.sqrt(vmax) / bias_correction2_sqrt + eps
                else:
                    denom = xp.sqrt(v) / bias_correction2_sqrt + eps
                p.array -= (lr / bias_correction1) * (m / denom)
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p <- p (1 - lr wd)`` before the Adam step,
    instead of adding ``wd p`` to the gradient. Default ``weight_decay=1e-2`` as in PyTorch."""

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
