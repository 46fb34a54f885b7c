"""Adagrad (Duchi et al. 2011), exactly as PyTorch computes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handgrad.engine.backend import get_array_module
from handgrad.optim.optimizer import Optimizer, _check_hyper, _grads, _weight_decay


class Adagrad(Optimizer):
    """For each parameter p with gradient g (negated if ``maximize``), at step t = 1, 2, ...::

        g <- g + weight_decay p
        clr = lr / (1 + (t - 1) lr_decay)
        s <- s + g^2                   (s starts at initial_accumulator_value)
        p <- p - clr g / (sqrt(s) + eps)

    State per parameter: ``step``, ``sum`` (s).
    """

    def __init__(
        self, params: Any, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
        initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
        maximize: bool = False, differentiable: bool = False, fused: bool | None = None,
    ) -> None:
        _check_hyper("Adagrad", lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                     initial_accumulator_value=initial_accumulator_value)
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults)
        # PyTorch creates the state at construction, so a state_dict taken before the first step has it.
        for group in self.param_groups:
            for p in group["params"]:
                xp = get_array_module(p.array)
                self.state[p] = {"step": 0, "sum": xp.full_like(p.array, group["initial_accumulator_value"])}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure(closure)
        for group in self.param_groups:
            lr, decay, eps = group["lr"], group["lr_decay"], group["eps"]
            for p, g in _grads(group):
                xp = get_array_module(p.array)
                if group["maximize"]:
                    g = -g
                state = self.state[p]
                if not state:  # a parameter added later by add_param_group
                    state["step"] = 0
                    state["sum"] = xp.full_like(p.array, group["initial_accumulator_value"])
                state["step"] += 1
                g = _weight_decay(group, p, g)
                clr = lr / (1 + (state["step"] - 1) * decay)
                s = state["sum"]
                s += g * g
                p.array -= clr * (g / (xp.sqrt(s) + eps))
        return loss
