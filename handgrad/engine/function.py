"""``Function``: one node of the define-by-run graph, a forward on arrays and its hand-written backward.

Modelled on Chainer's ``FunctionNode``. A subclass implements

* ``forward(self, *xs) -> y or (y1, y2, ...)`` on raw arrays (NumPy or CuPy), saving on ``self`` whatever
  the backward needs, and
* ``backward(self, *gys) -> gx or (gx1, gx2, ...)``: the vector-Jacobian product, one entry per input
  (``None`` where an input needs no gradient; ``self.needs_input_grad[i]`` says which ones do).

Neither method may write into the arrays it receives: the same gradient array is often handed to several
nodes (``add`` passes ``gy`` to both operands), and ``expand``/``sum`` hand out read-only broadcast views.
A gradient returned in another dtype than its input is cast back (and reported under ``detect_anomaly``).

Calling the instance on tensors runs ``forward`` and, when grad mode is on and some input requires a
gradient, records the node so that ``Tensor.backward`` can walk it. Hyper-parameters go to ``__init__``::

    y = SumFunction(axis=1, keepdims=True)(x)
"""

from __future__ import annotations

import itertools
import os
import traceback
from typing import TYPE_CHECKING, Any

from handgrad.engine.backend import _cupy, device_of_array, get_array_module
from handgrad.engine.grad_mode import anomaly_on, grad_off, state

if TYPE_CHECKING:
    from handgrad.engine.tensor import Tensor


class Function:
    inputs: tuple[Tensor, ...] | None
    needs_input_grad: tuple[bool, ...]
    outputs_meta: tuple[tuple[tuple[int, ...], Any], ...]
    origin: str | None = None  # the user's line that created the node (only under detect_anomaly)
    seq: int  # creation order, set when the node is recorded
    _retain: dict[int, Any] | None = None  # output index -> weakref of a tensor that called retain_grad()

    # -- the two methods every op writes -------------------------------------------------------------
    def forward(self, *xs: Any) -> Any:
        raise NotImplementedError

    def backward(self, *gys: Any) -> Any:
        raise NotImplementedError

    # -- machinery ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, *inputs: Tensor) -> Any:
        # The hot path of every op, kept flat: no isinstance chains, no per-call imports, no comprehensions
        # for the usual one or two inputs, the output tensor built inline. At small sizes this Python
        # bookkeeping, not the array math, is the cost of an op.
        n = len(inputs)
        if n == 1:
            x = inputs[0]
            if x._view is not None:  # a view: its base may have been rewritten in place since (views.py)
                _refresh(x)
            record = x.requires_grad and (not grad_off[0] or state.grad_enabled)
            self.needs_input_grad = _TRUE1 if record else _FALSE1
            outs = self.forward(x.array)
        elif n == 2:
            a, b = inputs
            if a._view is not None:
                _refresh(a)
            if b._view is not None:
                _refresh(b)
            if type(a.array) is not type(b.array) or _cupy_ndarray is not None:
                _check_same_device(self, inputs)
            ra, rb = a.requires_grad, b.requires_grad
            record = (ra or rb) and (not grad_off[0] or state.grad_enabled)
            self.needs_input_grad = (ra, rb) if record else _FALSE2
            outs = self.forward(a.array, b.array)
        else:
            for t in inputs:
                if t._view is not None:
                    _refresh(t)
            _check_same_device(self, inputs)
            needs = tuple([t.requires_grad for t in inputs])
            record = True in needs and (not grad_off[0] or state.grad_enabled)
            self.needs_input_grad = needs if record else (False,) * n
            outs = self.forward(*[t.array for t in inputs])
        if anomaly_on[0] and state.anomaly:
            self.origin = _user_line()
            _check_finite(self, outs if type(outs) is tuple else (outs,), "forward")
        if type(outs) is not tuple:
            t = _object_new(_tensor_cls)
            t.array = outs
            t.grad = None
            t._output_index = 0
            t._view = t._hist = None
            if record and outs.dtype.kind in "fc":
                self.inputs = inputs
                self.outputs_meta = _SINGLE_OUTPUT
                self.seq = _next_seq()
                t.requires_grad = True
                t._creator = self
            else:
                t.requires_grad = False
                t._creator = None
            return t
        new = _new_tensor
        if not record:
            return tuple([new(o, None, 0) for o in outs])
        self.inputs = inputs
        self.outputs_meta = tuple([(o.shape, o.dtype) for o in outs])
        self.seq = _next_seq()
        return tuple([new(o, self if o.dtype.kind in "fc" else None, i) for i, o in enumerate(outs)])

    def release(self) -> None:
        """Drop the saved arrays and inputs once backward is done (the graph is freed)."""
        d = self.__dict__
        kept = {"inputs": None, "needs_input_grad": d["needs_input_grad"], "outputs_meta": d["outputs_meta"],
                "seq": d["seq"]}
        if "origin" in d:
            kept["origin"] = d["origin"]
        if "_retain" in d:
            kept["_retain"] = d["_retain"]
        self.__dict__ = kept

    def __repr__(self) -> str:
        return f"<{self.name} backward>"


_TRUE1, _FALSE1, _FALSE2 = (True,), (False,), (False, False)
# Creation order of recorded nodes: a node's inputs always come from older nodes, so running backward in
# decreasing ``seq`` is a valid reverse topological order (PyTorch's sequence_nr idea).
_next_seq = itertools.count().__next__
_SINGLE_OUTPUT = ((None, None),)  # outputs_meta of a one-output node: only its length is ever read
_object_new = object.__new__
_cupy_ndarray = None if _cupy is None else _cupy.ndarray


def _check_same_device(fn: Function, inputs: tuple[Tensor, ...]) -> None:
    """Refuse inputs on different devices, naming the op and both devices (PyTorch's rule: no implicit
    copies). Called on the hot path only when two inputs' array types differ (or CuPy, with its several
    GPUs, is present), so plain NumPy ops pay one type comparison."""
    first = None
    for i, t in enumerate(inputs):
        d = device_of_array(t.array, None)
        if d is None:
            continue
        if first is None:
            first = (i, d)
        elif d != first[1]:
            raise RuntimeError(
                f"{fn.name}: input {first[0]} is on {first[1]} but input {i} is on {d}; an op needs all its "
                "inputs on one device (move them with .to(device))"
            )


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../handgrad (the package)


def _in_package(filename: str) -> bool:
    """Is ``filename`` handgrad's own code? Decided by the package's directory, not by a folder name in the
    path (a clone called ``handgrad`` holds the user's scripts and tests too)."""
    path = os.path.abspath(filename)
    return path == _PACKAGE_DIR or path.startswith(_PACKAGE_DIR + os.sep)


def _user_line() -> str:
    """The innermost stack frame outside the handgrad package: where the user built this op."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not _in_package(frame.filename):
            return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}: {frame.line}'
    return "<unknown>"


def _check_finite(fn: Function, arrays: Any, phase: str) -> None:
    for i, a in enumerate(arrays):
        if a is None or a.dtype.kind not in "fc":
            continue
        xp = get_array_module(a)
        if not bool(xp.isfinite(a).all()):
            bad = "NaN" if bool(xp.isnan(a).any()) else "inf"
            what = f"output {i}" if phase == "forward" else f"gradient for input {i}"
            raise FloatingPointError(
                f"detect_anomaly: {fn.name}.{phase} produced {bad} in its {what} "
                f"(shape {tuple(a.shape)}); the op was created at {fn.origin or '<unknown>'}"
            )


def check_backward_finite(fn: Function, grads: Any) -> None:
    """Anomaly mode's checks on a backward's result: finite values, and each gradient in its input's dtype
    (outside anomaly mode a wrong dtype is silently cast, as in PyTorch; here it is reported, because it
    usually means an op promotes float32 to float64 by accident)."""
    _check_finite(fn, grads, "backward")
    for i, (t, g) in enumerate(zip(fn.inputs or (), grads)):
        if g is not None and g.dtype != t.array.dtype:
            raise TypeError(
                f"detect_anomaly: {fn.name}.backward returned a {g.dtype} gradient for input {i} of dtype "
                f"{t.array.dtype}; the op was created at {fn.origin or '<unknown>'}"
            )


# late import (the engine's rule for import cycles, see tensor.py): Tensor's module imports this one
from handgrad.engine.tensor import Tensor as _tensor_cls  # noqa: E402, N813
from handgrad.engine.tensor import _make as _new_tensor  # noqa: E402
from handgrad.engine.views import refresh as _refresh  # noqa: E402
