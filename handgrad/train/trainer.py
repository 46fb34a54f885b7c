"""``Trainer``: the epoch loop, validation, metrics, history, callbacks, checkpoints and resume.

    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-3), F.cross_entropy,
                      callbacks=[EarlyStopping(patience=3, restore_best_weights=True)], out_dir="runs/x")
    history = trainer.fit(train_loader, val_loader, epochs=20)
    print(trainer.evaluate(test_loader))        # {"loss": ..., "accuracy": ...}

One epoch: ``model.train()``; for each batch ``(x, y)``: ``optimizer.zero_grad()``, ``out = model(x)``,
``loss = loss_fn(out, y)``, ``loss.backward()``, optional gradient-norm clipping, ``optimizer.step()``;
then (with a ``val_loader``) ``evaluate`` under ``no_grad`` in eval mode. The epoch's row of the history
holds ``epoch`` (from 1), ``loss`` and each metric (sample-weighted means over the epoch, measured on the
fly in train mode, as Keras does), ``val_loss`` and ``val_<metric>``, the learning rate ``lr`` the epoch
ran with, and the wall ``time`` in seconds. With ``out_dir`` the history is rewritten as
``history.csv`` and ``history.json`` after every epoch.

``epochs`` is the number of the last epoch (Keras' meaning with ``initial_epoch``): a fresh trainer runs
epochs 1..N; ``fit(..., resume=ckpt)`` loads the checkpoint (saved after epoch k) and runs k+1..N,
giving the same weights and history as the uninterrupted run, since the checkpoint holds the model,
optimizer, scheduler, callbacks, history, handgrad's random generator and the loaders' shuffling
state (their ``state_dict``, or the private generator of a ``DataLoader(seed=...)``).

Ctrl-C (``KeyboardInterrupt``) during ``fit`` rolls the trainer back to the end of the last completed
epoch (the partial epoch is dropped so the state is consistent), saves that as
``out_dir/interrupted.safetensors`` (resumable), runs the ``on_fit_end`` hooks (so EarlyStopping can
restore the best weights), prints where it saved, and then returns the history with
``history.meta["interrupted"] = True`` (``on_interrupt="return"``, the default) or re-raises
(``on_interrupt="raise"``).

To train a model whose batches are not ``(inputs, targets)`` or whose loss is not ``loss_fn(out, y)``,
subclass and override ``unpack_batch``, ``forward`` or ``compute_loss``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy

from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.train.callbacks import Callback, LRSchedulerCallback, clone_state
from handgrad.train.history import History
from handgrad.train.metrics import Metric, batch_size_of, get_metrics

CHECKPOINT_FORMAT = "handgrad.trainer/1"


class Trainer:
    """Fit a ``Module`` with an optimizer and a loss; see the module docstring for the loop.

    Args:
        model: the ``handgrad.nn.Module`` to train.
        optimizer: a ``handgrad.optim`` optimizer over the model's parameters.
        loss_fn: ``loss_fn(output, target) -> scalar Tensor`` (the batch mean), e.g. ``F.cross_entropy``.
        metrics: names (``"accuracy"``), ``Metric`` objects or callables ``fn(output, target) -> float``.
        callbacks: ``Callback`` objects (EarlyStopping, ModelCheckpoint, LRSchedulerCallback, ...).
        scheduler: an LR scheduler stepped once per epoch; a ``ReduceLROnPlateau`` gets ``scheduler_monitor``.
        out_dir: where history.csv / history.json (and an interrupted checkpoint) go; ``None``: nowhere.
        grad_clip: clip the global gradient norm to this value before each step (``None``: no clipping).
        progress: tqdm bars per epoch; ``None`` (default) shows them only when stderr is a terminal.
        verbose: print one summary line per epoch to stdout.
        on_interrupt: ``"return"`` or ``"raise"`` after Ctrl-C has been handled.
        scheduler_monitor: the log column a ReduceLROnPlateau scheduler steps on.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        loss_fn: Callable[[Any, Any], Tensor],
        metrics: Any = ("accuracy",),
        callbacks: Sequence[Callback] | None = None,
        scheduler: Any = None,
        out_dir: str | os.PathLike[str] | None = None,
        grad_clip: float | None = None,
        progress: bool | None = None,
        verbose: bool = True,
        on_interrupt: str = "return",
        scheduler_monitor: str = "val_loss",
    ) -> None:
        if not callable(loss_fn):
            raise TypeError(f"Trainer: loss_fn must be callable, got {type(loss_fn).__name__}")
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
            raise TypeError(f"Trainer: optimizer must have step() and zero_grad(), got {type(optimizer).__name__}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"Trainer: grad_clip must be a positive number or None, got {grad_clip!r}")
        if on_interrupt not in ("return", "raise"):
            raise ValueError(f"Trainer: on_interrupt must be 'return' or 'raise', got {on_interrupt!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metrics: list[Metric] = get_metrics(metrics)
        cbs = list(callbacks or [])
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise TypeError(f"Trainer: callbacks must be Callback objects, got {type(cb).__name__}")
        if scheduler is not None:
            cbs.append(LRSchedulerCallback(scheduler, monitor=scheduler_monitor))
        schedulers = [cb.scheduler for cb in cbs if isinstance(cb, LRSchedulerCallback)]
        if len(schedulers) > 1:
            raise ValueError("Trainer: more than one LR scheduler; chain them in one scheduler instead")
        self.scheduler = schedulers[0] if schedulers else None
        self.callbacks: list[Callback] = sorted(cbs, key=lambda c: c.order)  # stable: equal orders keep theirs
        for cb in self.callbacks:
            cb.set_trainer(self)
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.grad_clip = grad_clip
        self.progress = progress
        self.verbose = verbose
        self.on_interrupt = on_interrupt
        self.history = History()
        self.epoch = 0  # completed epochs
        self.stop_training = False
        self.train_loader: Any = None
        self.val_loader: Any = None
        self._clean: dict[str, Any] | None = None

    # -- the parts a subclass may override -----------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` from one batch of the loader."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        got = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(
            f"Trainer: expected each batch to be (inputs, targets), got {got}; "
            "override Trainer.unpack_batch for other layouts"
        )

    def forward(self, inputs: Any) -> Any:
        """The model's output for a batch; tuples of inputs are passed as separate arguments."""
        if isinstance(inputs, tuple):
            return self.model(*inputs)
        return self.model(inputs)

    def compute_loss(self, output: Any, target: Any) -> Tensor:
        loss = self.loss_fn(output, target)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = loss.shape if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"Trainer: loss_fn must return a one-element Tensor, got {shape}")
        return loss

    # -- training -------------------------------------------------------------------------------------------
    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        epochs: int = 1,
        resume: str | os.PathLike[str] | None = None,
    ) -> History:
        """Train until epoch ``epochs`` (or until a callback stops it); returns the ``History``."""
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"Trainer.fit: epochs must be a positive integer, got {epochs!r}")
        epochs = int(epochs)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.stop_training = False
        self.history.meta.pop("interrupted", None)
        self._call("on_fit_start")
        if resume is not None:
            self.load_checkpoint(resume)
        self._clean = self.checkpoint_state(copy=True)
        logs: dict[str, Any] = self.history.rows[-1] if len(self.history) else {}
        try:
            while self.epoch < epochs and not self.stop_training:
                logs = self._run_epoch(self.epoch + 1, epochs)
        except KeyboardInterrupt:
            logs = self._handle_interrupt()
            if self.on_interrupt == "raise":
                self._call("on_fit_end", logs)
                self._write_history()
                raise
        self._call("on_fit_end", logs)
        self._write_history()
        return self.history

    def _run_epoch(self, epoch: int, epochs: int) -> dict[str, Any]:
        start = time.perf_counter()
        lr = self.current_lr()
        self._call("on_epoch_start", epoch)
        logs: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch, epochs)}
        if self.val_loader is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
        if lr is not None:
            logs["lr"] = lr
        logs["time"] = round(time.perf_counter() - start, 3)
        self.epoch = epoch
        self.history.append(logs)
        logs = self.history.rows[-1]  # callbacks may add columns (they land in the history)
        self._call("on_epoch_end", epoch, logs)
        self._write_history()
        # the Ctrl-C snapshot is taken before the epoch is announced: once "epoch k" is printed, an interrupt
        # keeps epoch k
        self._clean = self.checkpoint_state(copy=True)
        if self.verbose:
            print(f"epoch {epoch}/{epochs}  " + _format_logs(logs), flush=True)
        return logs

    def _train_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)  # loaders that derive their shuffle from (seed, epoch)
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        bar = self._bar(self.train_loader, f"epoch {epoch}/{epochs}")
        try:
            for i, batch in enumerate(bar):
                inputs, target = self.unpack_batch(batch)
                self.optimizer.zero_grad()
                output = self.forward(inputs)
                loss = self.compute_loss(output, target)
                loss.backward()
                if self.grad_clip is not None:
                    _clip_grad_norm(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                n = batch_size_of(output, target)
                value = float(loss.item())
                total += value * n
                count += n
                out = output.detach() if isinstance(output, Tensor) else output
                for m in self.metrics:
                    m.update(out, target)
                if bar is not None and hasattr(bar, "set_postfix"):
                    post = {"loss": f"{total / count:.4f}"}
                    if self.metrics:
                        post[self.metrics[0].name] = f"{self.metrics[0].compute():.4f}"
                    bar.set_postfix(post, refresh=False)
                self._call("on_batch_end", i, {"loss": value, "size": n})
                if self.stop_training:
                    break
        finally:
            if hasattr(bar, "close"):
                bar.close()
        if count == 0:
            raise ValueError("Trainer.fit: the training loader yielded no batches")
        logs = {"loss": total / count}
        logs.update({m.name: m.compute() for m in self.metrics})
        return logs

    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """``{"loss": ..., <metric>: ...}`` over the whole loader, in eval mode under ``no_grad``.

        Means are sample-weighted, so they are the dataset values whatever the batch size. The model's
        train/eval mode is put back afterwards.
        """
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        try:
            with no_grad():
                for batch in loader:
                    inputs, target = self.unpack_batch(batch)
                    output = self.forward(inputs)
                    loss = self.compute_loss(output, target)
                    n = batch_size_of(output, target)
                    total += float(loss.item()) * n
                    count += n
                    for m in self.metrics:
                        m.update(output, target)
        finally:
            self.model.train(was_training)
        if count == 0:
            raise ValueError("Trainer.evaluate: the loader yielded no batches")
        out = {"loss": total / count}
        out.update({m.name: m.compute() for m in self.metrics})
        return out

    def current_lr(self) -> float | None:
        groups = getattr(self.optimizer, "param_groups", None)
        if groups and "lr" in groups[0]:
            return float(groups[0]["lr"])
        return None

    # -- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_state(self, copy: bool = False) -> dict[str, Any]:
        """Everything ``resume`` needs, as a nested dict that ``handgrad.save`` can write."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if hasattr(self.optimizer, "state_dict") else {},
            "history": self.history.state_dict(),
            "callbacks": {_cb_key(i, cb): cb.state_dict() for i, cb in enumerate(self.callbacks)},
            # JSON text: the PCG64 state holds 128-bit integers
            "rng": json.dumps(get_rng().bit_generator.state),
        }
        if self.scheduler is not None and hasattr(self.scheduler, "state_dict"):
            state["scheduler"] = self.scheduler.state_dict()
        loaders = {}
        for name, loader in (("train", self.train_loader), ("val", self.val_loader)):
            if loader is not None and hasattr(loader, "state_dict"):
                loaders[name] = loader.state_dict()
            elif _loader_generator(loader) is not None:  # DataLoader(seed=...): its private shuffling generator
                loaders[name] = {"generator": json.dumps(_loader_generator(loader).bit_generator.state)}
        if loaders:
            state["loaders"] = loaders
        return clone_state(state) if copy else state

    def save_checkpoint(self, path: str | os.PathLike[str], state: dict[str, Any] | None = None) -> str:
        """Write ``checkpoint_state()`` (or ``state``) to ``path`` atomically; returns the path."""
        from handgrad.serialization import save

        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        save(self.checkpoint_state() if state is None else state, path)
        return path

    def load_checkpoint(self, path_or_state: str | os.PathLike[str] | dict[str, Any]) -> None:
        """Restore the model, optimizer, scheduler, callbacks, history, epoch and RNG from a checkpoint."""
        if isinstance(path_or_state, dict):
            state = path_or_state
            where = "the given state"
        else:
            from handgrad.serialization import load

            where = os.fspath(path_or_state)
            if not os.path.exists(where):
                raise FileNotFoundError(f"Trainer: no checkpoint at {where}")
            state = load(where)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"Trainer: {where} is not a Trainer checkpoint (no format {CHECKPOINT_FORMAT!r})")
        self.model.load_state_dict(state["model"])
        if hasattr(self.optimizer, "load_state_dict"):
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        saved_cbs = state.get("callbacks", {})
        for i, cb in enumerate(self.callbacks):
            key = _cb_key(i, cb)
            if key in saved_cbs:
                cb.load_state_dict(saved_cbs[key])
        self.history.load_state_dict(state["history"])
        self.epoch = int(state["epoch"])
        get_rng().bit_generator.state = json.loads(state["rng"])
        for name, loader in (("train", self.train_loader), ("val", self.val_loader)):
            saved = state.get("loaders", {}).get(name)
            if saved is None or loader is None:
                continue
            if hasattr(loader, "load_state_dict"):
                loader.load_state_dict(saved)
            elif "generator" in saved and _loader_generator(loader) is not None:
                _loader_generator(loader).bit_generator.state = json.loads(saved["generator"])

    def _handle_interrupt(self) -> dict[str, Any]:
        """Roll back to the last clean epoch, save it, and say so."""
        if self._clean is not None:
            self.load_checkpoint(clone_state(self._clean))
        self.history.meta["interrupted"] = True
        where = "not saved (no out_dir)"
        if self.out_dir is not None and self._clean is not None:
            self._clean["history"]["meta"]["interrupted"] = True
            path = self.save_checkpoint(os.path.join(self.out_dir, "interrupted.safetensors"), self._clean)
            where = f"saved to {path} (resume with Trainer.fit(..., resume=path))"
        print(
            f"\nTrainer: interrupted during epoch {self.epoch + 1}; rolled back to the end of epoch "
            f"{self.epoch}; checkpoint {where}",
            file=sys.stderr,
            flush=True,
        )
        return self.history.rows[-1] if len(self.history) else {}

    # -- helpers --------------------------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _write_history(self) -> None:
        if self.out_dir is None or not len(self.history):
            return
        os.makedirs(self.out_dir, exist_ok=True)
        self.history.to_csv(os.path.join(self.out_dir, "history.csv"))
        self.history.to_json(os.path.join(self.out_dir, "history.json"))

    def _bar(self, loader: Iterable[Any], desc: str) -> Any:
        show = self.progress if self.progress is not None else _stderr_is_tty()
        if not show:
            return loader
        from tqdm.auto import tqdm

        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        return tqdm(loader, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def _loader_generator(loader: Any) -> Any:
    """The NumPy generator a loader shuffles with when it has its own (``DataLoader(seed=...)``), else None."""
    for attr in ("generator", "_generator"):
        g = getattr(loader, attr, None)
        if isinstance(g, numpy.random.Generator):
            return g
    return None


def _cb_key(i: int, cb: Callback) -> str:
    return f"{i}:{type(cb).__name__}"


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _format_logs(logs: dict[str, Any]) -> str:
    parts = []
    for k, v in logs.items():
        if k == "epoch":
            continue
        if k == "lr":
            parts.append(f"lr {v:.3g}")
        elif k == "time":
            parts.append(f"{v:.1f}s")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4f}")
    return "  ".join(parts)


def _clip_grad_norm(parameters: Iterable[Any], max_norm: float) -> float:
    """Scale all gradients by ``min(1, max_norm / ||g||_2)`` (the global norm); uses handgrad.nn.utils when
    it is there, so both agree."""
    try:
        from handgrad.nn.utils import clip_grad_norm_
    except ImportError:
        clip_grad_norm_ = None
    params = [p for p in parameters if p.grad is not None]
    if clip_grad_norm_ is not None:
        return float(clip_grad_norm_(params, max_norm))
    total = math.sqrt(sum(float((p.grad.data.astype("float64") ** 2).sum()) for p in params))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in params:
            p.grad.data *= scale
    return total
