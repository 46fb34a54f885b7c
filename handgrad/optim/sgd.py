"""Stochastic gradient descent with momentum, dampening, Nesterov, weight decay and maximize (PyTorch's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handgrad.optim.optimizer import Optimizer, _check_hyper, _grads


class SGD(Optimizer):
    """For each parameter p with gradient g (negated if ``maximize``)::

        g <- g + weight_decay * p
        b <- g                                      (first step)
        b <- momentum * b + (1 - dampening) * g     (later steps)        [only if momentum != 0]
        g <- g + momentum * b  if nesterov  else  b
        p <- p - lr * g

    State per parameter: ``momentum_buffer`` (when momentum != 0).
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, momentum: float = 0, dampening: float = 0, weight_decay: float = 0,
        nesterov: bool = False, *, maximize: bool = False,
    ) -> None:
        _check_hyper("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"SGD: nesterov momentum requires momentum > 0 and dampening = 0, got momentum={momentum}, "
                f"dampening={dampening}"
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            for p, g in _grads(group):
                if group["maximize"]:
                    g = -g
                if wd != 0:
                    g = g + wd * p.array
                if mom != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= mom
                        buf += (1 - damp) * g
                    g = g + mom * buf if group["nesterov"] else buf
                p.array -= lr * g
        return loss
