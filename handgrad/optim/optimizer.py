"""``Optimizer``: the base class of update rules, with PyTorch's API.

An optimizer holds ``param_groups`` (a list of dicts: ``'params'`` plus that group's hyper-parameters) and
``state`` (per-parameter arrays such as momentum buffers, keyed by the parameter). ``step()`` reads each
parameter's ``p.grad.array`` and updates ``p.array`` IN PLACE with array math only, so no graph is
recorded and references to the parameter (modules, other optimizers) stay valid.

``state_dict()`` has PyTorch's structure, with NumPy arrays instead of tensors::

    {'state': {0: {'step': 3, 'exp_avg': ndarray, ...}, 1: {...}},
     'param_groups': [{'lr': 0.001, ..., 'params': [0, 1]}, ...]}

where parameters are numbered in group order, so a state dict can be loaded into a fresh optimizer over
the same (re-created) parameters and the run resumes with an identical trajectory.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.grad_mode import enable_grad
from handgrad.engine.tensor import Tensor


class _RequiredParameter:
    """Marks a hyper-parameter with no default (``lr`` of SGD in old PyTorch)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class: subclasses call ``super().__init__(params, defaults)`` and implement ``step``."""

    # state entries that are arrays but not shaped like their parameter (LBFGS's flat vectors)
    _unshaped_state: tuple[str, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(
                f"{name}: params must be an iterable of Tensors or dicts, got a single Tensor of shape {params.shape}"
            )
        if isinstance(params, dict):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, got a dict")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # -- groups -----------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (missing ones take the defaults)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name}: parameters must be an ordered collection, not a set")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can't optimize a non-leaf Tensor (shape {p.shape})")
            if p.dtype.kind not in "fc":
                raise TypeError(f"{name}: can only optimize floating tensors, got dtype {p.dtype} (shape {p.shape})")
        group = dict(param_group)
        group["params"] = params
        for key, default in self.defaults.items():
            if default is required and key not in group:
                raise ValueError(f"{name}: parameter group didn't specify a value of required argument {key!r}")
            group.setdefault(key, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter group lists the same parameter more than once")
        if any(id(p) in seen for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # -- gradients --------------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set ``p.grad`` to None (default) or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.array[...] = 0

    def _closure(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state and hyper-parameters (deep copies), parameters replaced by indices."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index:
                state[index[id(p)]] = {k: _to_numpy_copy(v) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()``: groups must match in number and size; arrays are copied in, cast
        to each parameter's dtype, shapes checked. A ``torch.optim`` state dict of the same optimizer
        (tensors instead of arrays) loads too, so a run can continue from a PyTorch checkpoint."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(groups)} parameter groups, "
                f"the optimizer has {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} has {len(saved['params'])} parameters in the "
                    f"state dict but {len(own['params'])} in the optimizer"
                )
        id_map = {
            pid: p for saved, own in zip(groups, self.param_groups) for pid, p in zip(saved["params"], own["params"])
        }
        new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for pid, s in state_dict["state"].items():
            if pid not in id_map:
                continue
            p = id_map[pid]
            restored = {}
            for k, v in s.items():
                if k == "step":  # an int here; PyTorch keeps a float tensor, which loads as well
                    restored[k] = int(float(v.item() if hasattr(v, "item") else v))
                elif isinstance(v, numpy.ndarray) or hasattr(v, "__array__") and not numpy.isscalar(v):
                    arr = numpy.asarray(v.numpy() if isinstance(v, Tensor) else v)
                    if arr.shape != p.shape and k not in self._unshaped_state:
                        raise ValueError(
                            f"{name}.load_state_dict: state {k!r} of parameter {pid} has shape {arr.shape} "
                            f"but the parameter has {p.shape}"
                        )
                    xp = get_array_module(p.array)
                    dtype = p.dtype if arr.dtype.kind in "fc" else arr.dtype
                    restored[k] = xp.array(arr, dtype=dtype, copy=True)
                else:
                    restored[k] = copy.deepcopy(v)
            new_state[p] = restored
        self.state = new_state
        for saved, own in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    own[k] = copy.deepcopy(v)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _to_numpy_copy(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.numpy().copy()
    xp = get_array_module(v)
    if isinstance(v, xp.ndarray):
        return numpy.array(v if xp is numpy else xp.asnumpy(v), copy=True)
    return copy.deepcopy(v)


def _check_hyper(name: str, **values: float) -> None:
    """Reject negative learning rates, decays, etc. with the optimizer's name and the bad value."""
    for key, v in values.items():
        if v < 0:
            raise ValueError(f"{name}: invalid {key} {v} (must be >= 0)")


def _check_betas(name: str, betas: tuple[float, float]) -> None:
    """Reject Adam-family betas outside [0, 1) with the optimizer's name, the index and the value."""
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name}: invalid beta parameter at index {i}: {b} (must be in [0, 1))")


def _adam_state(group: dict[str, Any], state: dict[str, Any], p: Tensor, g: Any, **first: Any) -> Any:
    """The Adam family's per-step preamble: on the first step ``state`` gets ``step = 0``, the ``first``
    entries (e.g. NAdam's ``mu_product``), and zero ``exp_avg`` / ``exp_avg_sq`` shaped like p (in
    PyTorch's key order); then ``step += 1``. Returns g, negated when the group maximizes."""
    if not state:
        xp = get_array_module(p.array)
        state["step"] = 0
        state.update(first)
        state["exp_avg"] = xp.zeros_like(p.array)
        state["exp_avg_sq"] = xp.zeros_like(p.array)
    state["step"] += 1
    return -g if group["maximize"] else g


def _weight_decay(group: dict[str, Any], p: Tensor, g: Any) -> Any:
    """The gradient with weight decay applied: ``g + wd p`` (L2 penalty), or, when the group has
    ``decoupled_weight_decay`` set (AdamW-style), ``g`` unchanged and ``p <- p (1 - lr wd)`` in place."""
    wd = group["weight_decay"]
    if wd != 0:
        if group.get("decoupled_weight_decay", False):
            p.array *= 1 - group["lr"] * wd
        else:
            g = g + wd * p.array
    return g


def _square_avg(v: Any, g: Any, beta: float) -> None:
    """In place: ``v <- beta v + (1 - beta) g^2`` (the running mean of squared gradients)."""
    v *= beta
    v += (1 - beta) * (g * g)


def _adam_moments(m: Any, v: Any, g: Any, beta1: float, beta2: float) -> None:
    """In place: ``m <- beta1 m + (1 - beta1) g`` (a lerp towards g, as torch computes it) and
    ``v <- beta2 v + (1 - beta2) g^2``."""
    m += (1 - beta1) * (g - m)
    _square_avg(v, g, beta2)


def _grads(group: dict[str, Any]) -> Iterable[tuple[Tensor, Any]]:
    """(param, grad array) for each parameter of ``group`` that has a gradient."""
    for p in group["params"]:
        if p.grad is not None:
            yield p, p.grad.array
