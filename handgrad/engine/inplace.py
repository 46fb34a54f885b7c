"""In-place modification of tensors as PyTorch does it: version counters, and the graph rewrite.

Every in-place op (``add_``, ``mul_``, ``+=``, ``fill_``, ...) goes through ``apply_inplace``:

* a leaf that requires grad refuses (outside ``no_grad``), as in PyTorch: its ``.grad`` would be the
  gradient of a value that no longer exists;
* outside the graph (no operand requires grad, or under ``no_grad``) the data array is overwritten: every
  tensor sharing it (``detach()``, NumPy views) sees the new values;
* inside the graph the op is recorded like PyTorch's ``AddBackward`` on ``a.add_(b)``: the out-of-place op
  runs on a snapshot of the old value (which keeps the old creator, so gradients still reach it), its result
  is copied into the same array, and the tensor's creator becomes the new node.

Each write bumps the tensor's version counter (``t._version``) and stamps it with the creation counter of
graph nodes (``Function.seq``). A node recorded before that stamp that saved the overwritten array (an input
it keeps, or its own output, e.g. ``exp`` and ``sigmoid`` keep y) would compute a wrong gradient, so
``Tensor.backward`` raises PyTorch's error there instead (``check_versions``). Nodes that never read the
array back (``add``) are unaffected, as in PyTorch. The check costs one integer comparison per node until
some in-place write has happened.

A view made by an op (``x[0]``, ``x.t()``, ``x.view(...)``) shares its root base's counter, and an in-place op
on a view inside the graph rewrites the base's graph (``engine/views.py``, PyTorch's CopySlices). Nodes
recorded before a write keep reaching the creator their input had then (``views.record_history``), as
PyTorch's edges do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import _next_seq
from handgrad.engine.grad_mode import no_grad, state
from handgrad.engine.views import check_view_write, record_history, refresh, root_of, shares_memory, stamps, write_view

if TYPE_CHECKING:
    from handgrad.engine.function import Function
    from handgrad.engine.tensor import Tensor



def version_counter(t: Tensor) -> list[int]:
    """``[version, stamp]`` of ``t``, shared with the tensors that alias its data (``detach``, and every view
    of the same root base)."""
    v = getattr(t, "_view", None)
    if v is not None:
        t = v[0]
    vc = getattr(t, "_vc", None)
    if vc is None:
        vc = t._vc = [0, -1]  # type: ignore[attr-defined]
    return vc


def bump(t: Tensor) -> None:
    vc = version_counter(t)
    vc[0] += 1
    vc[1] = stamps.last = _next_seq()


def _saves(fn: Function, arr: Any) -> bool:
    """Whether node ``fn`` keeps the very array ``arr`` for its backward (directly or in a tuple/list)."""
    for v in fn.__dict__.values():
        if v is arr:
            return True
        if isinstance(v, (tuple, list)) and any(e is arr for e in v):
            return True
    return False


def _describe(t: Tensor) -> str:
    name = "handgrad." + {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
                          "int32": "IntTensor", "bool": "BoolTensor"}.get(str(t.dtype), f"{t.dtype}Tensor")
    return f"[{name} {list(t.shape)}]"


def _error(what: str, role: str, fn: Function, version: int) -> RuntimeError:
    return RuntimeError(
        f"one of the variables needed for gradient computation has been modified by an inplace operation: "
        f"{what}, which is {role} of {fn.name}, is at version {version}; it was modified after {fn.name} "
        "saved it. Hint: use the out-of-place op (x = x * 2 instead of x.mul_(2) or x *= 2), or modify a "
        ".clone()")


def _counter(t: Tensor) -> list[int] | None:
    v = getattr(t, "_view", None)
    return getattr(t if v is None else v[0], "_vc", None)


def check_versions(fn: Function) -> None:
    """Raise PyTorch's error if an array ``fn`` saved was overwritten in place after ``fn`` was recorded.
    Called by the backward sweep for nodes older than the latest in-place write."""
    for i, t in enumerate(fn.inputs or ()):
        vc = _counter(t)
        if vc is not None and vc[1] > fn.seq and _saves(fn, t.array):
            raise _error(_describe(t), f"input {i}", fn, vc[0])
    clobbered = fn.__dict__.get("_clobbered")
    if clobbered is not None:
        index, what, version = clobbered
        raise _error(what, f"output {index}", fn, version)


def _write(op: str, t: Tensor, arr: Any) -> None:
    """Copy ``arr`` into ``t``'s array (same shape; a same-kind cast, as PyTorch allows)."""
    xp = get_array_module(t.array)
    if tuple(arr.shape) != t.shape:
        raise RuntimeError(f"{op}: the result has shape {tuple(arr.shape)}, which does not match the tensor of "
                           f"shape {t.shape} written in place (an in-place op cannot broadcast its own tensor)")
    if arr.dtype != t.dtype and not xp.can_cast(arr.dtype, t.dtype, casting="same_kind"):
        raise RuntimeError(f"{op}: result type {arr.dtype} can't be cast to the desired output type {t.dtype}")
    try:
        xp.copyto(t.array, arr, casting="unsafe")
    except ValueError as e:  # a read-only array (a broadcast view, an expand)
        raise RuntimeError(f"{op}: cannot write into this tensor in place ({e}); clone() it first") from None


def _mark_clobbered(old: Function | None, index: int, t: Tensor) -> None:
    """If node ``old`` (``t``'s creator before the write) kept ``t``'s array for its backward (exp and sigmoid
    keep their output y), make its backward raise (``check_versions``)."""
    if old is not None and old.inputs is not None and _saves(old, t.array):
        old.__dict__["_clobbered"] = (index, _describe(t), version_counter(t)[0] + 1)


def _refuse_graph_view(op: str, old: Function | None, t: Tensor) -> None:
    """A view of a tensor that requires grad made without ``mark_view`` (a ``Function`` called directly, not
    through a view op): its base's graph cannot be rewritten, so its gradient would be wrong; refuse."""
    if old is None or not old.inputs:
        return
    shares = getattr(get_array_module(t.array), "may_share_memory", None)
    if shares is None:
        return
    for base in old.inputs:
        if base.requires_grad and base.array is not t.array and shares(base.array, t.array):
            raise RuntimeError(
                f"{op}: in-place write into a view (made by {old.name}, not a view op) of a tensor of shape "
                f"{base.shape} that requires grad: its base's graph cannot be rewritten, so its gradient would be "
                "wrong; use an out-of-place op, or write into a .clone() of the view")


def note_write(t: Tensor) -> None:
    """Record a direct write into ``t``'s array (``t[i] = v`` outside the graph): bump its version, and make
    its creator's backward raise if that node kept the array (for a view: its root's creator too)."""
    _mark_clobbered(t._creator, t._output_index, t)
    root = root_of(t)
    if root is not t:
        _mark_clobbered(root._creator, root._output_index, root)
    bump(t)


def apply_inplace(op: str, t: Tensor, compute: Callable[[Tensor], Tensor], others: tuple[Any, ...] = ()) -> Tensor:
    """Make ``t`` hold ``compute(t)`` in place (``compute`` is the out-of-place op); see the module docstring.
    ``others``: the op's other operands (a tensor among them that requires grad puts the op in the graph)."""
    from_tensors = [o for o in others if hasattr(o, "requires_grad")]
    for o in (t, *from_tensors):
        if getattr(o, "_view", None) is not None:
            refresh(o)  # a stale view takes its root's current graph first (and may now require grad)
    graph = state.grad_enabled and (t.requires_grad or any(o.requires_grad for o in from_tensors))
    if state.grad_enabled and t.requires_grad and t._creator is None:
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an in-place operation; "
                           "modify it under handgrad.no_grad() (as an optimizer step does), or a clone()")
    old, index = t._creator, t._output_index
    view = getattr(t, "_view", None)
    if view is not None and not shares_memory(t.array, view[0].array):
        t._view = view = None  # no longer a view (a deepcopy, or ``base.data = other`` since): a tensor of its own
    if view is not None and state.grad_enabled:
        check_view_write(op, t, graph)
    if not graph:
        with no_grad():
            r = compute(t)
        _write(op, t, r.array)
        note_write(t)  # a non-leaf written under no_grad keeps its creator: check it (and its root's) too
        return t
    if view is not None:
        write_view(op, t, compute, _write, _mark_clobbered)
        bump(t)
        return t
    _refuse_graph_view(op, old, t)
    stamp = _next_seq()  # nodes recorded before the write keep reaching the old creator
    prev = type(t)._from_op(t.array.copy(), old, index)  # the old value, still made by the old node
    prev.requires_grad = t.requires_grad
    r = compute(prev)
    _write(op, t, r.array)
    _mark_clobbered(old, index, t)
    record_history(t, stamp)
    t._creator, t._output_index, t.requires_grad = r._creator, r._output_index, r.requires_grad
    bump(t)  # (t's views are stale now: views.refresh gives them the new graph when they are next used)
    return t


def check_viewable(t: Tensor, shape: Any) -> None:
    """PyTorch's ``view`` error when ``t``'s data cannot be reshaped to ``shape`` without a copy."""
    xp = get_array_module(t.array)
    try:
        xp.reshape(t.array, tuple(int(s) for s in shape), copy=False)
    except TypeError:  # an array module without reshape(copy=): let reshape decide
        return
    except ValueError as e:
        if "copy" not in str(e):
            return  # a bad shape: reshape's own error names it
        raise RuntimeError(
            f"view size is not compatible with input tensor's size and stride (at least one dimension spans "
            f"across two contiguous subspaces): shape {t.shape} to {tuple(shape)}. Use .reshape(...) instead."
        ) from None
