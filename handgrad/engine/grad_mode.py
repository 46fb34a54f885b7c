"""Switches that decide whether ops record the graph (``no_grad``) and whether they check for NaN/inf
(``detect_anomaly``).

``no_grad``, ``enable_grad`` and ``set_grad_enabled`` work like PyTorch's: as ``with`` blocks, as
decorators with or without parentheses (``@no_grad`` / ``@no_grad()``), and ``set_grad_enabled(False)``
called on its own switches the mode at once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _State(threading.local):
    """Per thread, as PyTorch's grad mode: ``no_grad`` in one thread (an evaluation worker) leaves training
    in another untouched. A new thread starts with grad enabled and anomaly detection off."""

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False


state = _State()

# How many threads have grad mode off / anomaly detection on. While both are 0 (ordinary training), the hot
# path of every op (``Function.__call__``) skips the thread-local read (about 100 ns, a tenth of a small op's
# cost). Counts change only through ``_set_grad_enabled`` / ``_set_anomaly``, under a lock; a thread that ends
# inside ``no_grad`` leaves its count behind, which only costs speed, never correctness.
grad_off = [0]
anomaly_on = [0]
_lock = threading.Lock()


def _set_grad_enabled(value: bool) -> None:
    if state.grad_enabled != value:
        with _lock:
            state.grad_enabled = value
            grad_off[0] += -1 if value else 1


def _set_anomaly(value: bool) -> None:
    if state.anomaly != value:
        with _lock:
            state.anomaly = value
            anomaly_on[0] += 1 if value else -1


def is_grad_enabled() -> bool:
    return state.grad_enabled


class _GradMode:
    """Sets ``state.grad_enabled`` for a ``with`` block (re-entrant: a stack of previous values) or for
    every call of a decorated function."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(state.grad_enabled)
        _set_grad_enabled(self.enabled)

    def __exit__(self, *exc: Any) -> None:
        _set_grad_enabled(self._previous.pop())

    def __call__(self, func: F) -> F:
        enabled = self.enabled

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(enabled):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad(func: Callable[..., Any] | None = None) -> Any:
    """Context manager (and decorator, with or without parentheses) in which ops record no graph:
    for evaluation and parameter updates."""
    if func is not None:
        return _GradMode(False)(func)
    return _GradMode(False)


def enable_grad(func: Callable[..., Any] | None = None) -> Any:
    """Context manager / decorator that turns graph recording back on inside a ``no_grad`` region."""
    if func is not None:
        return _GradMode(True)(func)
    return _GradMode(True)


inference_mode = no_grad  # handgrad has no separate inference tensors: the same as no_grad


class set_grad_enabled(_GradMode):  # noqa: N801 - torch name
    """``set_grad_enabled(False)`` switches grad mode off at once (like PyTorch); used in ``with`` it
    restores the previous mode on exit."""

    def __init__(self, mode: bool) -> None:
        super().__init__(bool(mode))
        self._outer = state.grad_enabled
        _set_grad_enabled(self.enabled)

    def __enter__(self) -> None:
        self._previous.append(self._outer)
        _set_grad_enabled(self.enabled)

    def __call__(self, func: F) -> F:
        _set_grad_enabled(self._outer)  # used as a decorator: the switch applies only inside calls
        return super().__call__(func)


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Raise ``FloatingPointError`` at the first op whose forward or backward makes NaN or inf.

    While active, every op remembers the line of user code that created it, and the error names the op
    and that line. It costs one ``isfinite`` pass per op output, so it is off by default.
    """
    previous = state.anomaly
    _set_anomaly(True)
    try:
        yield
    finally:
        _set_anomaly(previous)
