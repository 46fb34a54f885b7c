"""A carried recurrent state, cut from the graph between truncated-BPTT windows (``BPTTUpdater``,
``handgrad.recurrent.tbptt``)."""

from __future__ import annotations

from typing import Any

from handgrad.engine.tensor import Tensor


def detach_state(state: Any) -> Any:
    """The same state with every Tensor detached from the graph (values shared, no copy).

    Works on a Tensor, None, and (nested) tuples / lists / dicts of them, e.g. an LSTM's ``(h, c)`` or a
    list of per-layer states; the container types are kept.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple):
        items = [detach_state(s) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)  # namedtuples too
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    raise TypeError(f"detach_state: expected a Tensor, None, or a tuple/list/dict of them, got {type(state).__name__}")
