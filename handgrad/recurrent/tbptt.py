"""Truncated back-propagation through time for long streams.

A stream too long for one backward (a book, a long recording) is cut into windows of ``bptt`` steps. The
state at the end of one window is the start of the next (so the model still sees the whole past), but it is
*detached*: gradients stop at the window boundary, so memory and time per update stay ``O(bptt)``.

Example (a character language model over a ``(N, B)`` stream of token ids, i.e. B parallel streams)::

    from handgrad.recurrent import detach_state, tbptt_windows

    hidden = None                                   # nn.LSTM: None or a tuple (h, c)
    for inputs, targets in tbptt_windows(stream, bptt=100):
        hidden = detach_state(hidden)               # keep the values, cut the graph
        output, hidden = lstm(embed(inputs), hidden)
        loss = F.cross_entropy(head(output).reshape(-1, V), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from handgrad.engine.tensor import Tensor
from handgrad.train.state import detach_state

__all__ = ["detach_state", "tbptt_windows"]


def tbptt_windows(stream: Any, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(inputs, targets)`` windows of a time-major stream, targets shifted by one step.

    ``stream``: a Tensor or array ``(N, ...)`` with time first (e.g. ``(N, B)`` token ids from B parallel
    streams). Yields ``stream[i : i + L]`` and ``stream[i + 1 : i + 1 + L]`` with ``L = min(bptt, N - 1 - i)``
    for ``i = 0, bptt, 2 bptt, ...``; the last window may be shorter. Every step but the last is an input once.
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ValueError(f"tbptt_windows: bptt must be a positive integer, got {bptt!r}")
    data = stream.array if isinstance(stream, Tensor) else stream
    n = len(data)
    if n < 2:
        raise ValueError(f"tbptt_windows: the stream needs at least 2 steps, got shape {tuple(data.shape)}")
    for i in range(0, n - 1, bptt):
        L = min(bptt, n - 1 - i)
        yield Tensor(data[i : i + L]), Tensor(data[i + 1 : i + 1 + L])
