"""Truncated back-propagation through time as an update step: :class:`BPTTUpdater` and its data,
:class:`StreamLoader` (Chainer's ``examples/ptb`` ``BPTTUpdater`` + ``ParallelSequentialIterator``).

A long sequence of ids (a book) is cut into ``B`` equal consecutive streams read in parallel, ``bptt`` steps
at a time. Each window is a :class:`Window` ``(x, y, reset)``: inputs ``x`` (B, T) and targets ``y`` (B, T),
``y`` one step ahead of ``x``; ``reset`` says that the streams start anew (the first window, or new stream
boundaries after a wrap-around), so the carried state must be dropped.

The updater carries the model's recurrent state from one window to the next, *detached*: the model still
sees the whole past, but gradients stop at the window boundary, so memory and time per step are O(bptt)::

    state = None if reset else detach(state)
    logits, state = model(x, state)                  # logits (B, T, V)
    loss = loss_fn(logits.reshape(-1, V), y.reshape(-1))
    zero_grad; backward; clip; step

The carried state (as arrays) is part of :meth:`BPTTUpdater.state_dict`, and the loader's position,
stream shift and shuffling generator part of :meth:`StreamLoader.state_dict`, so a Trainer checkpoint
resumes a truncated-BPTT run bit-exactly, even between two windows of one pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy

from handgrad.engine.tensor import Tensor
from handgrad.train.state import detach_state
from handgrad.train.updaters import Updater


class Window(NamedTuple):
    """One truncated-BPTT window: ``x`` (B, T) and ``y`` (B, T) int64 ids, ``reset``: drop the carried state."""

    x: numpy.ndarray
    y: numpy.ndarray
    reset: bool


def streams(ids: numpy.ndarray, n_streams: int) -> numpy.ndarray:
    """``ids`` cut into ``n_streams`` equal consecutive pieces, time-major ``(N // n_streams, n_streams)``."""
    n = len(ids) // n_streams
    return numpy.ascontiguousarray(ids[: n * n_streams].reshape(n_streams, n).T)


class StreamLoader:
    """Windows of ``bptt`` steps over ``n_streams`` parallel streams of the 1-D sequence ``ids``.

    ``steps_per_epoch``: an epoch is that many windows, the stream continuing across epochs (a "pass" over
    the text may end inside an epoch); ``None``: an epoch is one pass. When a pass is used up (the next
    window would run past the end), the streams restart: with ``shuffle=True`` on new boundaries (the
    sequence rotated by a random shift drawn from ``self.generator``, so the next pass does not see the
    same windows in the same batches), else on the same ones. Only whole windows are produced.
    """

    def __init__(self, ids: Any, n_streams: int, bptt: int, steps_per_epoch: int | None = None,
                 shuffle: bool = True, seed: int = 0) -> None:
        self.ids = numpy.asarray(ids)
        if self.ids.ndim != 1:
            raise ValueError(f"StreamLoader: ids must be 1-D, got shape {self.ids.shape}")
        for name, v in (("n_streams", n_streams), ("bptt", bptt)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"StreamLoader: {name} must be a positive integer, got {v!r}")
        if steps_per_epoch is not None and (int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1):
            raise ValueError(f"StreamLoader: steps_per_epoch must be a positive integer or None, "
                             f"got {steps_per_epoch!r}")
        self.n_streams, self.bptt = int(n_streams), int(bptt)
        if len(self.ids) < self.n_streams * (self.bptt + 1):
            raise ValueError(f"StreamLoader: {len(self.ids)} ids are too few for {self.n_streams} streams of "
                             f"windows of {self.bptt} (need at least {self.n_streams * (self.bptt + 1)})")
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.shuffle = shuffle
        self.generator = numpy.random.default_rng(seed)
        self.pos, self.shift = 0, 0
        self._data = streams(self.ids, self.n_streams)

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return (len(self._data) - 1) // self.bptt

    def _wrap(self) -> None:
        # new stream boundaries (a random shift) so the next pass sees new batches; the state starts afresh
        if self.shuffle:
            self.shift = int(self.generator.integers(0, len(self.ids) // self.n_streams))
            self._data = streams(numpy.roll(self.ids, -self.shift), self.n_streams)
        self.pos = 0

    def _full(self) -> bool:
        return self.pos + self.bptt + 1 > len(self._data)

    def _window(self) -> Window:
        reset = self.pos == 0
        x = self._data[self.pos : self.pos + self.bptt]
        y = self._data[self.pos + 1 : self.pos + 1 + self.bptt]
        self.pos += self.bptt
        return Window(numpy.ascontiguousarray(x.T), numpy.ascontiguousarray(y.T), reset)

    def __iter__(self) -> Iterator[Window]:
        if self.steps_per_epoch is not None:
            for _ in range(self.steps_per_epoch):
                if self._full():
                    self._wrap()
                yield self._window()
            return
        if self._full():
            self._wrap()
        while not self._full():
            yield self._window()

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos, "shift": self.shift, "generator": json.dumps(self.generator.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.shift = int(state["pos"]), int(state["shift"])
        self.generator.bit_generator.state = json.loads(state["generator"])
        self._data = streams(numpy.roll(self.ids, -self.shift), self.n_streams)


class BPTTUpdater(Updater):
    """Truncated BPTT with a carried, detached recurrent state, on :class:`Window` batches.

    Args:
        model: ``model(x (B, T) ids Tensor, state) -> (logits (B, T, V), new state)``; ``state`` is None or
            whatever the model returned last (a Tensor, a tuple of them, nested lists...). Override
            :meth:`forward` for models with another signature.
        optimizer, grad_clip: as :class:`~handgrad.train.updaters.Updater`.
        loss_fn: ``loss_fn(logits (B*T, V), targets (B*T,)) -> scalar`` (default: ``F.cross_entropy``).

    ``self.state`` is the training state carried between windows and ``self.eval_state`` the one carried by
    :meth:`evaluate` (so validation never disturbs training). Both are saved by :meth:`state_dict`.
    """

    def __init__(self, model: Any, optimizer: Any, loss_fn: Callable[[Any, Any], Tensor] | None = None,
                 grad_clip: float | Callable[[Any], Any] | None = None) -> None:
        super().__init__(model, optimizer, grad_clip)
        if loss_fn is None:
            from handgrad.functional import cross_entropy as loss_fn
        self.loss_fn = loss_fn
        self.state: Any = None
        self.eval_state: Any = None

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``(logits (B, T, V), new state)``."""
        return self.model(x, state)

    def _step(self, batch: Any, state: Any) -> tuple[Tensor, Tensor, numpy.ndarray, Any]:
        if not isinstance(batch, Window):
            raise TypeError(f"{type(self).__name__}: expected a Window (x, y, reset) from a StreamLoader, "
                            f"got {type(batch).__name__}")
        state = None if batch.reset else detach_state(state)
        logits, state = self.forward(Tensor(batch.x), state)
        v = logits.shape[-1]
        loss = self.loss_fn(logits.reshape(-1, v), Tensor(batch.y.reshape(-1)))
        return loss, logits, batch.y, state

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        loss, logits, y, self.state = self._step(batch, self.state)
        return loss, logits, y

    def evaluate(self, batch: Any) -> dict[str, Any]:
        loss, logits, y, self.eval_state = self._step(self.send(batch), self.eval_state)
        return self._result(loss, logits, y)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "state": state_arrays(self.state), "eval_state": state_arrays(self.eval_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.state = state_tensors(state.get("state"))
        self.eval_state = state_tensors(state.get("eval_state"))


def state_arrays(state: Any) -> Any:
    """A recurrent state (None, a Tensor, or tuples/lists of them) as host arrays, for a checkpoint."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.numpy().copy()
    if isinstance(state, (tuple, list)):
        return type(state)(state_arrays(s) for s in state)
    raise TypeError(f"state_arrays: expected None, a Tensor, or tuples/lists of them, got {type(state).__name__}")


def state_tensors(state: Any) -> Any:
    """The inverse of :func:`state_arrays`: arrays back to (leaf) Tensors, containers kept."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(state_tensors(s) for s in state)
    return Tensor(numpy.array(state))
