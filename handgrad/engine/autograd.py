"""The reverse-mode sweep behind ``Tensor.backward``, and the one place gradients land in ``.grad``."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from handgrad.engine.backend import get_array_module
from handgrad.engine.function import _SINGLE_OUTPUT, Function, check_backward_finite
from handgrad.engine.grad_mode import anomaly_on, state
from handgrad.engine.inplace import check_versions, stamps
from handgrad.engine.views import creator_at

if TYPE_CHECKING:
    from handgrad.engine.tensor import Tensor


def accumulate_grad(t: Tensor, g: Any) -> None:
    """``t.grad += g``, creating ``t.grad`` (in ``t``'s dtype) on the first call.

    Used for leaves and for non-leaves that called ``retain_grad()``. The first gradient is copied: a
    backward may hand the same array to several inputs (e.g. ``add`` passes ``gy`` to both operands), and
    later accumulations write into ``t.grad`` in place.
    """
    if t.grad is None:
        t.grad = _make(g.astype(t.array.dtype, copy=True), None, 0)
    else:
        t.grad.array += g


def _freed_error(fn: Function) -> RuntimeError:
    return RuntimeError(
        f"backward through {fn.name} a second time: its graph was freed after the first backward; "
        "pass retain_graph=True to the first call if you need to go back twice"
    )


def run_backward(root: Function, index: int, grad: Any, retain_graph: bool) -> None:
    """Reverse-mode sweep from output ``index`` of ``root`` with output gradient ``grad``.

    Nodes run in decreasing creation order (``Function.seq``), kept in a heap of the nodes that have
    received some gradient. Every node's inputs were made before it, so when a node is popped all its
    consumers (newer nodes) have already run and its output gradients are complete; no separate
    topological-sort pass is needed. Each node's hand-written ``backward`` gets the summed output gradients
    and hands each input gradient to that input's creator, or accumulates it into a leaf's ``.grad``.
    A one-output node's pending gradient is the array itself, a multi-output node's a list of slots.
    """
    if root.inputs is None:
        raise _freed_error(root)
    grads: dict[Function, Any] = {}
    if root.outputs_meta is _SINGLE_OUTPUT:
        grads[root] = grad
    else:
        grads[root] = [None] * len(root.outputs_meta)
        grads[root][index] = grad
    heap = [(-root.seq, root)]
    pop, push = heapq.heappop, heapq.heappush
    anomaly = anomaly_on[0] and state.anomaly
    while heap:
        fn = pop(heap)[1]
        inputs = fn.inputs
        if inputs is None:
            raise _freed_error(fn)
        gys = grads.pop(fn)
        late = fn.seq < stamps.last
        if late:  # an in-place write happened after this node: did it clobber what fn saved?
            check_versions(fn)
        single = fn.outputs_meta is _SINGLE_OUTPUT
        if fn._retain is not None:
            _store_retained(fn, [gys] if single else gys)
        if single:
            gxs = fn.backward(gys)
        else:
            if any(g is None for g in gys):
                # a multi-output node whose other outputs got no gradient: those count as zeros
                xp = get_array_module(*(g for g in gys if g is not None))
                gys = [xp.zeros(s, d) if g is None else g for g, (s, d) in zip(gys, fn.outputs_meta)]
            gxs = fn.backward(*gys)
        if type(gxs) is not tuple:
            gxs = (gxs,)
        if len(gxs) != len(inputs):
            raise RuntimeError(f"{fn.name}.backward returned {len(gxs)} gradients for {len(inputs)} inputs")
        if anomaly:
            check_backward_finite(fn, gxs)
        for t, need, gx in zip(inputs, fn.needs_input_grad, gxs):
            if not need or gx is None:
                continue
            if gx.shape != t.array.shape:
                raise RuntimeError(
                    f"{fn.name}.backward returned a gradient of shape {tuple(gx.shape)} "
                    f"for an input of shape {t.shape}"
                )
            if gx.dtype != t.array.dtype:  # e.g. a float64 constant promoted a float32 gradient: cast back
                gx = gx.astype(t.array.dtype)
            if late:  # t may have been rewritten in place since fn was recorded: the creator it had then
                c, j = creator_at(t, fn.seq)
            else:
                c, j = t._creator, t._output_index
            if c is None:
                accumulate_grad(t, gx)
                continue
            prev = grads.get(c)
            if c.outputs_meta is _SINGLE_OUTPUT:
                if prev is None:
                    grads[c] = gx
                    push(heap, (-c.seq, c))
                else:
                    grads[c] = prev + gx
            else:
                if prev is None:
                    prev = grads[c] = [None] * len(c.outputs_meta)
                    push(heap, (-c.seq, c))
                prev[j] = gx if prev[j] is None else prev[j] + gx
        if not retain_graph:
            fn.release()


def _store_retained(fn: Function, gys: list[Any]) -> None:
    """Give ``retain_grad()`` tensors (non-leaves) their gradient as it passes through their creator."""
    for j, ref in fn._retain.items():  # type: ignore[union-attr]
        t = ref()
        if t is not None and gys[j] is not None:
            accumulate_grad(t, gys[j])


from handgrad.engine.tensor import _make  # noqa: E402  (the engine's late-import rule: see tensor.py)
