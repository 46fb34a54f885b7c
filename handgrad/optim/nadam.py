"""NAdam (Dozat 2016, Adam with Nesterov momentum) and RAdam (Liu et al. 2019, variance-rectified Adam),
exactly as PyTorch computes them."""

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


class NAdam(Optimizer):
    """At step t with gradient g, ``mu_t = beta1 (1 - 0.96^(t psi) / 2)`` (psi = momentum_decay)::

        m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
        P_t = prod_{i<=t} mu_i;   denom = sqrt(v / (1 - beta2^t)) + eps
        p <- p - lr (1 - mu_t) / (1 - P_t) g / denom - lr mu_{t+1} / (1 - P_t mu_{t+1}) m / denom

    State per parameter: ``step``, ``mu_product`` (P_t, a float), ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
        foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_hyper("NAdam", lr=lr, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay)
        _check_betas("NAdam", betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, eps, psi = group["lr"], group["eps"], group["momentum_decay"]
            beta1, beta2 = group["betas"]
            for p, g in _grads(group):
                xp = get_array_module(p.array)
                state = self.state[p]
                g = _adam_state(group, state, p, g, mu_product=1.0)
                t = state["step"]
                g = _weight_decay(group, p, g)
                mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
                mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
                state["mu_product"] *= mu
                mu_product = state["mu_product"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                _adam_moments(m, v, g, beta1, beta2)
                denom = xp.sqrt(v / (1 - beta2**t)) + eps
                p.array += (-lr * (1.0 - mu) / (1.0 - mu_product)) * (g / denom)
                p.array += (-lr * mu_next / (1.0 - mu_product * mu_next)) * (m / denom)
        return loss


class RAdam(Optimizer):
    """Adam whose adaptive step is switched on only once the variance of the adaptive lr is tractable::

        m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2;   mhat = m / (1 - beta1^t)
        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        if rho_t > 5:  r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                       p <- p - lr mhat sqrt(1 - beta2^t) / (sqrt(v) + eps) r
        else:          p <- p - lr mhat

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
        maximize: bool = False, capturable: bool = False, differentiable: bool = False,
    ) -> None:
        _check_hyper("RAdam", lr=lr, eps=eps, weight_decay=weight_decay)
        _check_betas("RAdam", betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
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
                t = state["step"]
                g = _weight_decay(group, p, g)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                _adam_moments(m, v, g, beta1, beta2)
                bc1, bc2 = 1 - beta1**t, 1 - beta2**t
                mhat = m / bc1
                rho_inf = 2 / (1 - beta2) - 1
                rho_t = rho_inf - 2 * t * (beta2**t) / bc2
                if rho_t > 5.0:
                    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    adaptive = bc2**0.5 / (xp.sqrt(v) + eps)
                    p.array -= mhat * lr * adaptive * rect
                else:
                    p.array -= mhat * lr
        return loss
