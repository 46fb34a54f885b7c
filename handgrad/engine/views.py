"""Views as PyTorch has them: a tensor made by a view op shares its base's memory, its base's version counter,
and an in-place write into it rewrites the base's graph (PyTorch's ``CopySlices``).

A view op (basic indexing ``x[0]``/``x[:, 1:3]``/``narrow``/``select``, ``permute``/``transpose``/``t``/``T``/
``mT``, ``reshape``/``view``/``flatten``/``squeeze``/``unsqueeze`` when no copy is made, ``expand``, and the
pieces of ``split``/``chunk``/``unbind``) calls ``mark_view``: the output records its *root* base (the first
tensor of the chain that is not itself a view) and the chain of steps that derive it from the root's array.
Then

* ``version_counter`` of a view is its root's: a write through any alias is seen by every node that saved
  any alias (``engine/inplace.py``);
* an in-place op on a view inside the graph (``write_view``) runs the op on a snapshot of the view, puts the
  result into the root as ``CopySlicesFunction(old root, new view value)`` (gradient: the old root's gets
  ``gy`` with the view's elements zeroed, the new value gets ``gy`` at the view's elements) and makes that
  node the root's creator;
* a view whose root's graph was rewritten since its creator was set (by a write through any view, or into
  the root itself) is *stale*: ``refresh`` gives it a ``ViewFunction`` of the root's current graph as its
  creator. As PyTorch regenerates a view's grad_fn, this happens lazily, when the view is next used: as an
  op's input (``Function.__call__``), in an in-place op, or through ``grad_fn``/``is_leaf``/``backward``.
  (A view's ``_view`` holds the root's rewrite count when its creator was set; the root's ``_hist`` grows
  by one per rewrite.)

The backward of both nodes applies the chain to a fresh C-contiguous gradient array, which gives a writable
view of the region (every step is a basic index, a transpose or a reshape); where a reshape would copy, or
an expand repeats elements, the chain applied to ``arange(root.numel()).reshape(root.shape)`` gives the
region's flat positions instead.

Refused, as in PyTorch: an in-place graph write into a view of a leaf that requires grad, into one made
under ``no_grad`` of a tensor that requires grad, into an ``expand``-ed view (elements repeat) and into a
piece of ``split``/``chunk``/``unbind`` (functions returning several views).

Consumers recorded before a write keep reaching the graph as it was: ``record_history`` keeps the creator
each rewritten tensor had before the write, and the backward sweep (``creator_at``) routes a node's gradient
to the creator its input had when the node was recorded.
"""

from __future__ import annotations

import bisect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import Function, _next_seq
from handgrad.engine.grad_mode import state

if TYPE_CHECKING:
    from handgrad.engine.tensor import Tensor

_MULTI = {"split": "SplitFunction", "unbind": "UnbindFunction"}

# ``last``: the stamp of the latest in-place write or view refresh; nodes recorded after it need no check in the
# backward sweep (their inputs' creators and saved arrays are as they were when the node was recorded)
stamps = types.SimpleNamespace(last=-1)


def index_view(a: Any, index: Any) -> Any:
    """``a[index]`` for a basic index, always an array view (NumPy gives a scalar copy for ``a[0]`` of a
    vector; ``a[0, ...]`` is the 0-d view PyTorch's ``x[0]`` is)."""
    y = a[index]
    if not hasattr(y, "ndim") or type(y) is not type(a):
        y = a[(*index, Ellipsis) if isinstance(index, tuple) else (index, Ellipsis)]
    return y


def _step(a: Any, kind: str, arg: Any) -> Any:
    if kind == "permute":
        return a.transpose(arg)
    if kind == "reshape":
        return a.reshape(arg)
    if kind == "expand":
        return get_array_module(a).broadcast_to(a, arg)
    return index_view(a, arg)  # getitem, and the pieces of split/unbind (each a basic index)


def apply_chain(a: Any, chain: tuple[tuple[str, Any], ...]) -> Any:
    for kind, arg in chain:
        a = _step(a, kind, arg)
    return a


def flat_index(chain: tuple[tuple[str, Any], ...], shape: tuple[int, ...], xp: Any) -> Any:
    """The flat positions in a root of ``shape`` of the elements of the view made by ``chain``."""
    n = 1
    for s in shape:
        n *= s
    # a copy: a view would keep the whole arange of the root alive in every node that holds the index
    return xp.array(apply_chain(xp.arange(n).reshape(shape), chain), copy=True)


def shares_memory(a: Any, b: Any) -> bool:
    """Whether two arrays may overlap in memory (a bounds check; False where the array module cannot tell)."""
    if type(a) is numpy.ndarray:
        return bool(numpy.may_share_memory(a, b))
    xp = get_array_module(a)
    f = getattr(xp, "may_share_memory", None) or getattr(xp, "shares_memory", None)
    return bool(f(a, b)) if f is not None else False


def mark_view(out: Tensor, x: Tensor, kind: str, arg: Any) -> Tensor:
    """Record that ``out`` views ``x``'s data through one step (``kind``, ``arg``); returns ``out``."""
    if out is x:
        return out
    v = x._view  # type: ignore[attr-defined]
    if v is None:
        root, chain = x, ((kind, arg),)
    else:
        root, chain = v[0], v[1] + ((kind, arg),)
    h = root._hist  # type: ignore[attr-defined]
    out._view = (root, chain, 0 if h is None else len(h))  # type: ignore[attr-defined]
    return out


def refresh(t: Tensor) -> None:
    """If the view ``t``'s root was rewritten in the graph since ``t``'s creator was set, make its creator a
    ``ViewFunction`` of the root's current graph (nodes recorded before keep the old one: ``_hist``)."""
    root, chain, seen = t._view  # type: ignore[attr-defined]
    h = root._hist  # type: ignore[attr-defined]
    if h is None or len(h) == seen or not state.grad_enabled:
        return
    stamp = stamps.last = _next_seq()
    record_history(t, stamp)
    y = ViewFunction(chain)(root)
    t._creator, t._output_index, t.requires_grad = y._creator, 0, y.requires_grad
    t._view = (root, chain, len(h))  # type: ignore[attr-defined]


def root_of(t: Tensor) -> Tensor:
    v = getattr(t, "_view", None)
    return t if v is None else v[0]


# -- the two nodes of a rewrite ---------------------------------------------------------------------------------
class CopySlicesFunction(Function):
    """y = base with the view's elements (the view of ``base`` made by ``chain``) replaced by v;  dbase = gy
    with those elements zeroed, dv = gy at those elements (PyTorch's CopySlices).

    Recorded by ``write_view`` after the new values were already written through the view into the base's
    memory, so the forward hands that array back as it is (no copy of the whole base per write)."""

    def __init__(self, chain: tuple[tuple[str, Any], ...]) -> None:
        self.chain = chain

    def forward(self, base: Any, v: Any) -> Any:
        self.shape = base.shape
        return base

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        gy = xp.asarray(gy)
        gb = gv = None
        if self.needs_input_grad[0]:
            gb = gy.copy()  # C order
            region = in_place_view(gb, self.chain)
            if region is not None:
                region[...] = 0
            else:
                gb.reshape(-1)[flat_index(self.chain, self.shape, xp)] = 0
        if self.needs_input_grad[1]:
            gv = xp.array(apply_chain(gy, self.chain), copy=True)
        return gb, gv


class ViewFunction(Function):
    """y = the view of x made by ``chain`` (basic indexing, permute, reshape, expand steps);  dx = zeros with
    gy put back at the viewed elements (added where ``expand`` repeats one). The regenerated creator of a
    view after its root was rewritten in place (PyTorch's AsStridedBackward)."""

    def __init__(self, chain: tuple[tuple[str, Any], ...]) -> None:
        self.chain = chain

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return apply_chain(x, self.chain)

    def backward(self, gy: Any) -> Any:
        xp = get_array_module(gy)
        if all(kind != "expand" for kind, _ in self.chain):
            gx = xp.zeros(self.shape, gy.dtype)
            region = in_place_view(gx, self.chain)
            if region is not None:
                region[...] = gy
                return gx
        index = flat_index(self.chain, self.shape, xp)
        gx = xp.zeros(_numel(self.shape), gy.dtype)
        xp.add.at(gx, index, gy)  # an expanded view repeats elements: their gradients add up
        return gx.reshape(self.shape)


def in_place_view(a: Any, chain: tuple[tuple[str, Any], ...]) -> Any:
    """The chain applied to the C-contiguous array ``a`` as a writable view of it, or None where a step
    would copy (a reshape the layout does not allow) or repeat elements (expand)."""
    if any(kind == "expand" for kind, _ in chain):
        return None
    v = apply_chain(a, chain)
    return v if shares_memory(v, a) else None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# -- the rewrite ----------------------------------------------------------------------------------------------
def record_history(t: Tensor, stamp: int) -> None:
    """Before ``t`` gets a new creator: nodes recorded before ``stamp`` keep reaching its current one."""
    h = t._hist  # type: ignore[attr-defined]
    entry = (stamp, t._creator, t._output_index)
    if h is None:
        t._hist = [entry]  # type: ignore[attr-defined]
    else:
        h.append(entry)


def creator_at(t: Tensor, seq: int) -> tuple[Any, int]:
    """The (creator, output index) ``t`` had when node number ``seq`` was recorded."""
    h = t._hist  # type: ignore[attr-defined]
    if h is not None:
        i = bisect.bisect_right(h, seq, key=_stamp)  # the first rewrite after node ``seq`` (stamps increase)
        if i < len(h):
            return h[i][1], h[i][2]
    return t._creator, t._output_index


def _stamp(entry: tuple[int, Any, int]) -> int:
    return entry[0]


def check_view_write(op: str, t: Tensor, graph: bool) -> None:
    """PyTorch's refusals for an in-place write into the view ``t`` with grad mode on (``graph``: the write
    is recorded, some operand requires grad)."""
    root, chain, _ = t._view  # type: ignore[attr-defined]
    if not graph:  # outside the graph only a view made under no_grad of a tensor that requires grad refuses
        if root.requires_grad and not t.requires_grad:
            raise _no_grad_view(op, root)
        return
    if root.requires_grad and root._creator is None:
        raise RuntimeError(f"{op}: a view of a leaf Variable that requires grad is being used in an in-place "
                           f"operation (the leaf has shape {root.shape}); modify the leaf under "
                           "handgrad.no_grad(), or a clone()")
    if root.requires_grad and not t.requires_grad:
        raise _no_grad_view(op, root)
    for kind, _ in chain:
        if kind in _MULTI:
            raise RuntimeError(f"{op}: this view is an output of {_MULTI[kind]}, a function that returns "
                               "multiple views; such views cannot be modified in place in a graph (as in "
                               "PyTorch); clone() the piece, or write into the base")
        if kind == "expand":
            raise RuntimeError(f"{op}: unsupported operation: more than one element of the written-to tensor "
                               "refers to a single memory location (an expand()-ed view); clone() it first")


def _no_grad_view(op: str, root: Tensor) -> RuntimeError:
    return RuntimeError(f"{op}: a view was created in no_grad mode and is being modified inplace with grad mode "
                        f"enabled (base of shape {root.shape}); create the view with grad mode on, or modify a "
                        "clone()")


def write_view(op: str, t: Tensor, compute: Callable[[Tensor], Tensor], write: Callable[[str, Tensor, Any], None],
               clobber: Callable[[Any, int, Tensor], None]) -> None:
    """The graph rewrite of an in-place op on the view ``t`` (see the module docstring). ``write`` copies an
    array into a tensor's memory (with the shape and cast checks), ``clobber`` marks a node that saved an
    array being overwritten."""
    root, chain, _ = t._view  # type: ignore[attr-defined]  (refreshed, and check_view_write has passed)
    stamp = _next_seq()
    prev = type(t)._from_op(t.array.copy(), t._creator, t._output_index)  # the view's old value and graph
    prev.requires_grad = t.requires_grad
    r = compute(prev)
    write(op, t, r.array)  # shape and dtype checks; the root's memory now holds the new values
    # the root before the write, as a graph handle only (CopySlices reads no values of it)
    old_root = type(root)._from_op(root.array, root._creator, root._output_index)
    old_root.requires_grad = root.requires_grad
    y = CopySlicesFunction(chain)(old_root, r if r.dtype == root.dtype else r.to(root.dtype))
    clobber(root._creator, root._output_index, root)
    record_history(root, stamp)
    root._creator, root._output_index, root.requires_grad = y._creator, 0, y.requires_grad
    refresh(t)  # t (and, when next used, every other view of the root) now reads the rewritten root
