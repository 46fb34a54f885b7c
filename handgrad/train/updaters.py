"""Update steps ("updaters"): what one training step does, apart from the loop that repeats it.

The :class:`~handgrad.train.Trainer` owns the loop (epochs, validation, history, callbacks, checkpoints,
resume, Ctrl-C); an updater owns one step. A chapter whose step differs from the supervised default plugs in
its own updater instead of forking the loop (Chainer's ``StandardUpdater`` / ``BPTTUpdater`` split).

The whole interface a Trainer (and :class:`handgrad.distributed.DistributedDataParallel`, which wraps an
updater and averages its gradients over MPI ranks) relies on::

    updater.model, updater.optimizer
    updater.update(batch) -> dict     # one optimizer step on a training batch (sent to the model's device)
    updater.evaluate(batch) -> dict   # the same forward and loss, no step (the Trainer adds eval mode + no_grad)
    updater.state_dict() -> dict      # extra state a bit-exact resume needs (a step counter, a carried state)
    updater.load_state_dict(state)

Both ``update`` and ``evaluate`` return ``{"loss": float (the batch mean), "size": int (its weight in the epoch
mean), "output": ..., "target": ...}`` (output and target feed the Trainer's metrics; ``output`` is detached).
The model and optimizer states are saved by the Trainer; ``state_dict`` holds only what the updater adds.

A new step usually overrides one method, :meth:`Updater.loss_and_output`::

    class MyUpdater(Updater):
        def loss_and_output(self, batch):
            x, y = batch
            out = self.model(Tensor(x))
            return my_loss(out, y), out, y

``update`` then does ``send -> zero_grad -> loss_and_output -> backward -> clip -> step``. Override ``send``
to keep host-side parts of a batch on the host, ``update`` itself only when the step is not one backward and
one optimizer step (a data-parallel step: split the batch, one backward per replica, all-reduce, one step).

The steps there are: :class:`StandardUpdater` (here; ``Trainer(model, optimizer, loss_fn)`` builds it),
:class:`~handgrad.train.bptt.BPTTUpdater` (truncated BPTT with a carried, detached state),
:class:`~handgrad.seq2seq.training.Seq2SeqUpdater` (teacher forcing / scheduled sampling on its own step
clock), :class:`~handgrad.seq2seq.captioning.CaptionUpdater`, and an experiment's own
(``HMLSTMUpdater`` in ``experiments/hmrnn_char_lm.py``: a slope schedule on the step count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from handgrad.engine.backend import send
from handgrad.engine.tensor import Tensor
from handgrad.train.metrics import batch_size_of


class Updater:
    """Base update step: ``zero_grad``, :meth:`loss_and_output`, ``backward``, optional clipping, ``step``.

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: a ``handgrad.optim`` optimizer over its parameters.
        grad_clip: clip the global gradient norm to this value before each step (``None``: no clipping), or a
            callable ``fn(parameters)`` that clips them itself (e.g. a ``ClipTracker``, which also counts).

    ``iteration`` counts the optimizer steps taken (saved in :meth:`state_dict`).
    """

    def __init__(self, model: Any, optimizer: Any, grad_clip: float | Callable[[Any], Any] | None = None) -> None:
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
            raise TypeError(f"{type(self).__name__}: optimizer must have step() and zero_grad(), "
                            f"got {type(optimizer).__name__}")
        if grad_clip is not None and not callable(grad_clip) and not grad_clip > 0:
            raise ValueError(f"{type(self).__name__}: grad_clip must be a positive number or None, got {grad_clip!r}")
        self.model = model
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.iteration = 0

    # -- the one method a chapter overrides ----------------------------------------------------------------------
    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        """``(loss, output, target)`` of one batch: the forward pass and the loss (a one-element Tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_and_output(batch)")

    # -- the step ---------------------------------------------------------------------------------------------
    def send(self, batch: Any) -> Any:
        """``batch`` on the model's device (``handgrad.engine.backend.send``: arrays, Tensors, tuples, lists,
        dicts); untouched when the model is on the CPU. Override to keep host-side parts on the host."""
        device = model_device(self.model)
        if device is None or device.type == "cpu":
            return batch
        return send(batch, device)

    def update(self, batch: Any) -> dict[str, Any]:
        """One optimizer step on ``batch``; returns ``{"loss", "size", "output", "target"}``."""
        batch = self.send(batch)
        self.optimizer.zero_grad()
        loss, output, target = self.loss_and_output(batch)
        _check_loss(loss, type(self).__name__)
        loss.backward()
        self.clip_gradients()
        self.optimizer.step()
        self.iteration += 1
        return self._result(loss, output, target)

    def clip_gradients(self) -> None:
        if callable(self.grad_clip):
            self.grad_clip(self.model.parameters())
        elif self.grad_clip is not None:
            clip_grad_norm(self.model.parameters(), self.grad_clip)

    def evaluate(self, batch: Any) -> dict[str, Any]:
        """The loss and output of ``batch`` without a step (call in eval mode under ``no_grad``)."""
        loss, output, target = self.loss_and_output(self.send(batch))
        _check_loss(loss, type(self).__name__)
        return self._result(loss, output, target)

    def state_dict(self) -> dict[str, Any]:
        """What a bit-exact resume needs beyond the model and optimizer (here: the step count)."""
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state.get("iteration", 0))

    @staticmethod
    def _result(loss: Tensor, output: Any, target: Any) -> dict[str, Any]:
        out = output.detach() if isinstance(output, Tensor) else output
        return {"loss": float(loss.item()), "size": batch_size_of(output, target), "output": out, "target": target}


class StandardUpdater(Updater):
    """The supervised default: batches ``(inputs, targets)``, ``output = model(inputs)`` (a tuple of inputs is
    passed as separate arguments), ``loss = loss_fn(output, targets)``.

    Args:
        model, optimizer, grad_clip: as :class:`Updater`.
        loss_fn: ``loss_fn(output, target) -> scalar Tensor`` (the batch mean), e.g. ``F.cross_entropy``.
    """

    def __init__(self, model: Any, optimizer: Any, loss_fn: Callable[[Any, Any], Tensor],
                 grad_clip: float | Callable[[Any], Any] | None = None) -> None:
        if not callable(loss_fn):
            raise TypeError(f"{type(self).__name__}: loss_fn must be callable, got {type(loss_fn).__name__}")
        super().__init__(model, optimizer, grad_clip)
        self.loss_fn = loss_fn

    def unpack_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` from one batch of the loader."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        got = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(f"{type(self).__name__}: expected each batch to be (inputs, targets), got {got}; "
                        "write an Updater for other layouts")

    def forward(self, inputs: Any) -> Any:
        if isinstance(inputs, tuple):
            return self.model(*inputs)
        return self.model(inputs)

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        inputs, target = self.unpack_batch(batch)
        output = self.forward(inputs)
        return self.loss_fn(output, target), output, target


def model_device(model: Any) -> Any:
    """The device of the model's first parameter (``None`` for a model without parameters)."""
    for p in model.parameters():
        return getattr(p, "device", None)
    return None


def _check_loss(loss: Any, who: str) -> None:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = loss.shape if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"{who}: loss_fn must return a one-element Tensor, got {shape}")


def clip_grad_norm(parameters: Iterable[Any], max_norm: float) -> float:
    """Scale all gradients by ``min(1, max_norm / ||g||_2)`` (the global norm); uses ``handgrad.nn.utils`` when
    it is there, so both agree. Returns the norm before clipping."""
    try:
        from handgrad.nn.utils import clip_grad_norm_
    except ImportError:
        clip_grad_norm_ = None
    params = [p for p in parameters if p.grad is not None]
    if clip_grad_norm_ is not None:
        return float(clip_grad_norm_(params, max_norm))
    total = math.sqrt(sum(float((p.grad.array.astype("float64") ** 2).sum()) for p in params))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in params:
            p.grad.array *= scale
    return total
