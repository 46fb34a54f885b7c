"""``Module``: the base class of layers and models, with PyTorch's API (parameters, buffers, children,
train/eval, state_dict / load_state_dict)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy

from handgrad.engine.backend import CPU, device_of_array, get_device, parse_to_args, to_host
from handgrad.engine.tensor import Tensor
from handgrad.nn.parameter import Parameter


class Module:
    """Subclass, create parameters and sub-modules in ``__init__``, compute in ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
            self.__dict__.pop(name, None)
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
            self.__dict__.pop(name, None)
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer '{name}' must be a Tensor or None")
            self._buffers[name] = value
        elif name in self._parameters:
            if value is not None:  # a plain Tensor would silently shadow the registered parameter
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} as parameter '{name}' "
                    "(Parameter or None expected)"
                )
            self._parameters[name] = None  # type: ignore[assignment]
        elif name in self._modules:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} as child module '{name}' "
                    "(Module or None expected)"
                )
            self._modules[name] = None  # type: ignore[assignment]
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._parameters[name] = param  # type: ignore[assignment]

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that is state but not trained (e.g. batch-norm running statistics)."""
        self._buffers[name] = tensor  # type: ignore[assignment]
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module  # type: ignore[assignment]

    # -- traversal ----------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Every module once, depth-first pre-order (PyTorch's order, so ``parameters()`` and
        ``state_dict()`` list things in the same order as the equivalent torch model)."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in m._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))  # popped first-child-first

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules with their names; one registered under two names is listed once (PyTorch)."""
        seen: set[int] = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for mname, m in self.named_modules(prefix):
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    # -- modes and grads ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.array[...] = 0

    def apply(self, fn: Any) -> Module:
        """Call ``fn`` on every sub-module, then on this one (PyTorch's order: children first, depth-first,
        in registration order; a child registered twice under one parent is visited once, as in PyTorch)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _apply(self, fn: Callable[[Any], Any]) -> Module:
        """Replace the array of every parameter, buffer and parameter gradient by ``fn(array)``, in place:
        the tensors stay the same objects (an optimizer built before keeps working), as PyTorch's
        ``Module._apply``. ``to``, ``cpu``, ``cuda``, ``float`` and ``double`` all go through here."""
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is None:
                        continue
                    t.array = fn(t.array)
                    if t.grad is not None:
                        t.grad.array = fn(t.grad.array)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` or ``to(device=, dtype=)``, as in
        PyTorch: move every parameter and buffer to ``device`` and cast the floating ones to ``dtype``
        (integer buffers such as BatchNorm's ``num_batches_tracked`` keep their dtype)."""
        device, dtype = parse_to_args(f"{type(self).__name__}.to", args, kwargs)
        if dtype is not None and dtype.kind not in "fc":
            raise TypeError(f"{type(self).__name__}.to: only floating dtypes are accepted, got {dtype}")

        def convert(a: Any) -> Any:
            if dtype is not None and a.dtype.kind in "fc" and a.dtype != dtype:
                a = a.astype(dtype)
            return a if device is None else device.send(a)

        return self._apply(convert)

    def cpu(self) -> Module:
        return self.to(CPU)

    def cuda(self, device: Any = None) -> Module:
        return self.to(get_device("cuda" if device is None else device))

    def double(self) -> Module:
        return self.to(numpy.float64)

    def float(self) -> Module:
        return self.to(numpy.float32)

    # -- calling ------------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, numpy.ndarray]:
        """Every parameter and persistent buffer, by dotted name, as a NumPy array copy."""
        out: OrderedDict[str, numpy.ndarray] = OrderedDict()
        for mname, m in self.named_modules():
            for store, skip in ((m._parameters, set()), (m._buffers, m._non_persistent)):
                for name, t in store.items():
                    if t is None or name in skip:
                        continue
                    key = f"{mname}.{name}" if mname else name
                    out[key] = numpy.array(to_host(t.array), copy=True)
        return out

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy arrays into parameters and buffers by name, each onto the device its tensor is on (a
        checkpoint saved from a GPU loads into a CPU model and back).

        With ``strict=True`` (the default) missing keys, unexpected keys and shape mismatches are all
        refused in one error that names them; nothing is changed in that case. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        own: dict[str, Tensor] = {}
        for mname, m in self.named_modules():
            for store, skip in ((m._parameters, set()), (m._buffers, m._non_persistent)):
                for name, t in store.items():
                    if t is not None and name not in skip:
                        own[f"{mname}.{name}" if mname else name] = t
        given = {k: (v.numpy() if isinstance(v, Tensor) else to_host(v)) for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        mismatched = [
            f"{k}: checkpoint {tuple(given[k].shape)} vs model {own[k].shape}"
            for k in own
            if k in given and tuple(given[k].shape) != own[k].shape
        ]
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise RuntimeError(f"load_state_dict for {type(self).__name__} refused: " + " | ".join(problems))
        for k, t in own.items():
            if k in given:
                host = given[k].astype(t.array.dtype if t.array.dtype.kind == "f" else given[k].dtype)
                t.array = device_of_array(t.array).send(numpy.asarray(host))
        return missing, unexpected

    # -- printing -----------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"
