"""Switches that decide whether ops record the graph (``no_grad``) and whether they check for NaN/inf
(``detect_anomaly``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class _State:
    grad_enabled: bool = True
    anomaly: bool = False


state = _State()


def is_grad_enabled() -> bool:
    return state.grad_enabled


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    previous = state.grad_enabled
    state.grad_enabled = enabled
    try:
        yield
    finally:
        state.grad_enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager (and decorator) in which ops record no graph: for evaluation and parameter updates."""
    return _grad_mode(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    return _grad_mode(True)


def set_grad_enabled(enabled: bool) -> contextlib.AbstractContextManager[None]:
    return _grad_mode(bool(enabled))


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Raise ``FloatingPointError`` at the first op whose forward or backward makes NaN or inf.

    While active, every op remembers the line of user code that created it, and the error names the op
    and that line. It costs one ``isfinite`` pass per op output, so it is off by default.
    """
    previous = state.anomaly
    state.anomaly = True
    try:
        yield
    finally:
        state.anomaly = previous
