"""A small pool of reusable NumPy work arrays for the fused recurrent ops.

A training step of a char-LM allocates tens of MB of gate, state and gradient buffers; fresh large
allocations come from the OS as untouched pages, and the first write to each page faults (measured: about
15% of an LSTM training step). The fused ops therefore take their internal buffers from this pool and give
them back when the graph is freed (``FusedRecurrenceFunction.release``) or, without a graph, at the end of the
forward.

An array is only taken back if nothing else refers to it (no live view: checked with the reference count),
so a buffer still visible to the caller is never overwritten. CuPy arrays bypass the pool (CuPy has its
own memory pool). Each thread has its own pool (thread-local), holding at most ``LIMIT_BYTES``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy

LIMIT_BYTES = 256 << 20

class _Pool(threading.local):
    def __init__(self) -> None:
        self.free: dict[tuple[tuple[int, ...], str], list[numpy.ndarray]] = {}
        self.held = 0


_pool = _Pool()


def empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array, from the pool when one of this shape and dtype is free."""
    if xp is numpy:
        pool = _pool
        lst = pool.free.get((tuple(shape), numpy.dtype(dtype).str))
        if lst:
            a = lst.pop()
            pool.held -= a.nbytes
            return a
    return xp.empty(shape, dtype)


def zeros(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    a = empty(xp, shape, dtype)
    a.fill(0)
    return a


def give_back(owner: Any, names: tuple[str, ...]) -> None:
    """Remove the arrays ``owner.<name>`` and return each to the pool if nothing else refers to it."""
    d = owner.__dict__
    for name in names:
        a = d.pop(name, None)
        # 2 references = the local ``a`` and getrefcount's argument: no attribute, view or caller holds it
        if type(a) is numpy.ndarray and a.base is None and sys.getrefcount(a) == 2:
            _put(a)


def give(*arrays: Any) -> None:
    """Return scratch arrays the caller is done with (the caller must hold no other reference)."""
    for a in arrays:
        if type(a) is numpy.ndarray and a.base is None:
            _put(a)


def _put(a: numpy.ndarray) -> None:
    pool = _pool
    if pool.held + a.nbytes > LIMIT_BYTES:
        return
    pool.free.setdefault((a.shape, a.dtype.str), []).append(a)
    pool.held += a.nbytes


def clear() -> None:
    """Drop every array pooled by this thread (frees the memory)."""
    _pool.free.clear()
    _pool.held = 0
