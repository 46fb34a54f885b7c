"""Adadelta (Zeiler 2012), exactly as PyTorch computes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.optim.optimizer import Optimizer, _check_hyper, _grads, _square_avg, _weight_decay


class Adadelta(Optimizer):
    """For each parameter p with gradient g (negated if ``maximize``)::

        g <- g + weight_decay p
        v <- rho v + (1 - rho) g^2
        delta <- sqrt(u + eps) / sqrt(v + eps) * g
        u <- rho u + (1 - rho) delta^2
        p <- p - lr delta

    State per parameter: ``step``, ``square_avg`` (v), ``acc_delta`` (u).
    """

    def __init__(
        self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
        foreach: bool | None = None, *, capturable: bool = False, maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_hyper("Adadelta", lr=lr, eps=eps, weight_decay=weight_decay)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Adadelta: invalid rho value {rho} (must be in [0, 1])")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p, g in _grads(group):
                xp = get_array_module(p.array)
                if group["maximize"]:
                    g = -g
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = xp.zeros_like(p.array)
                    state["acc_delta"] = xp.zeros_like(p.array)
                state["step"] += 1
                g = _weight_decay(group, p, g)
                v, u = state["square_avg"], state["acc_delta"]
                _square_avg(v, g, rho)
                delta = xp.sqrt(u + eps) / xp.sqrt(v + eps) * g
                _square_avg(u, delta, rho)
                p.array -= lr * delta
        return loss
