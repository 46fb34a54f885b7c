"""RMSprop (Hinton's), with momentum, centering, weight decay and maximize, as PyTorch computes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.optim.optimizer import Optimizer, _check_hyper, _grads, _square_avg, _weight_decay


class RMSprop(Optimizer):
    """For each parameter p with gradient g (negated if ``maximize``)::

        g <- g + weight_decay * p
        s <- alpha s + (1 - alpha) g^2
        a <- sqrt(s - gbar^2) + eps  with gbar <- alpha gbar + (1 - alpha) g   if centered
             sqrt(s) + eps                                                   otherwise
        b <- momentum b + g / a;  p <- p - lr b          if momentum > 0
        p <- p - lr g / a                                otherwise

    State per parameter: ``step``, ``square_avg`` (s), ``momentum_buffer`` (b), ``grad_avg`` (gbar).
    """

    def __init__(
        self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
        momentum: float = 0, centered: bool = False, *, maximize: bool = False,
    ) -> None:
        _check_hyper("RMSprop", lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            mom = group["momentum"]
            for p, g in _grads(group):
                xp = get_array_module(p.array)
                if group["maximize"]:
                    g = -g
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = xp.zeros_like(p.array)
                    if mom > 0:
                        state["momentum_buffer"] = xp.zeros_like(p.array)
                    if group["centered"]:
                        state["grad_avg"] = xp.zeros_like(p.array)
                state["step"] += 1
                g = _weight_decay(group, p, g)
                s = state["square_avg"]
                _square_avg(s, g, alpha)
                if group["centered"]:
                    gbar = state["grad_avg"]
                    gbar += (1 - alpha) * (g - gbar)
                    avg = xp.sqrt(s - gbar * gbar)
                else:
                    avg = xp.sqrt(s)
                avg += eps
                if mom > 0:
                    buf = state["momentum_buffer"]
                    buf *= mom
                    buf += g / avg
                    p.array -= lr * buf
                else:
                    p.array -= lr * (g / avg)
        return loss
