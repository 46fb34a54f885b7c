"""``Trainer``: the one training loop -- epochs, validation, metrics, history, callbacks, checkpoints, resume.

    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-3), F.cross_entropy,
                      callbacks=[EarlyStopping(patience=3, restore_best_weights=True)], out_dir="runs/x")
    history = trainer.fit(train_loader, val_loader, epochs=20)
    print(trainer.evaluate(test_loader))        # {"loss": ..., "accuracy": ...}

What ONE step does belongs to an update-step object, the *updater* (:mod:`handgrad.train.updaters`): the
supervised default :class:`~handgrad.train.updaters.StandardUpdater` (built from ``model, optimizer,
loss_fn, grad_clip``), truncated BPTT with a carried state (:class:`~handgrad.train.bptt.BPTTUpdater`), the
seq2seq and captioning steps, or a chapter's own: ``Trainer(updater=MyUpdater(model, optimizer),
metrics=...)``. The Trainer never forks for a new kind of step; it calls ``updater.update(batch)`` for each
training batch and ``updater.evaluate(batch)`` for each validation batch, and saves ``updater.state_dict()``
(a step counter, a carried recurrent state, a schedule's clock) in its checkpoints.

One epoch: ``model.train()``; for each batch one ``updater.update``; then (with a ``val_loader``)
``evaluate`` under ``no_grad`` in eval mode. The epoch's row of the history holds ``epoch`` (from 1),
``loss`` and each metric (sample-weighted means over the epoch, measured on the fly in train mode, as Keras
does), ``val_loss`` and ``val_<metric>``, the learning rate ``lr`` the epoch started with, the wall ``time``
in seconds, and whatever callbacks add. With ``out_dir`` the history is rewritten as ``history.csv`` and
``history.json`` after every epoch.

``epochs`` is the number of the last epoch (Keras' meaning with ``initial_epoch``): a fresh trainer runs
epochs 1..N; ``fit(..., resume=ckpt)`` loads the checkpoint (saved after epoch k) and runs k+1..N,
giving the same weights and history as the uninterrupted run, since the checkpoint holds the model,
optimizer, updater, scheduler, callbacks, history, handgrad's random generator and the loaders'
shuffling state (their ``state_dict``, or the private generator of a ``DataLoader(seed=...)``). A file
that is not a usable checkpoint raises ``CheckpointError`` (one line; see :mod:`handgrad.train.checkpoint`).

Ctrl-C (``KeyboardInterrupt``) during ``fit`` rolls the trainer back to the end of the last completed
epoch (the partial epoch is dropped so the state is consistent), saves that as
``out_dir/interrupted.safetensors`` (resumable; ``trainer.interrupt_checkpoint``), runs the
``on_fit_end`` hooks (so EarlyStopping can restore the best weights), prints where it saved (and
``resume_hint``, e.g. the command-line option that resumes), and then returns the history
with ``history.meta["interrupted"] = True`` (``on_interrupt="return"``, the default) or re-raises
(``on_interrupt="raise"``). A run resumed from that checkpoint that completes is not interrupted: its
history has no ``interrupted`` mark.
"""

from __future__ import annotations

import json
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
from handgrad.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_model_state,
    check_state,
    read_checkpoint,
    write_checkpoint,
)
from handgrad.train.history import History
from handgrad.train.metrics import Metric, get_metrics
from handgrad.train.updaters import StandardUpdater, Updater

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "Trainer"]


class Trainer:
    """Fit a model by repeating an update step; see the module docstring for the loop.

    Args:
        model, optimizer, loss_fn, grad_clip: build the default :class:`StandardUpdater` (``loss_fn(output,
            target) -> scalar Tensor``, e.g. ``F.cross_entropy``; ``grad_clip``: the global gradient norm).
        updater: instead of those, any :class:`~handgrad.train.updaters.Updater` (its model and optimizer
            are the trainer's).
        metrics: names (``"accuracy"``), ``Metric`` objects or callables ``fn(output, target) -> float``.
        callbacks: ``Callback`` objects (EarlyStopping, ModelCheckpoint, LRSchedulerCallback, ...).
        scheduler: an LR scheduler stepped once per epoch; a ``ReduceLROnPlateau`` gets ``scheduler_monitor``.
        out_dir: where history.csv / history.json (and an interrupted checkpoint) go; ``None``: nowhere.
        progress: tqdm bars per epoch; ``None`` (default) shows them only when stderr is a terminal.
        verbose: print one summary line per epoch to stdout.
        on_interrupt: ``"return"`` or ``"raise"`` after Ctrl-C has been handled.
        scheduler_monitor: the log column a ReduceLROnPlateau scheduler steps on.
        resume_hint: how to resume, printed after Ctrl-C; ``{path}`` is the checkpoint (default: the class
            attribute ``Trainer.resume_hint``, empty: a command line names its own option, and in Python it
            is ``fit(..., resume=path)``).
        run_name: a name for the kind of run (an experiment's name), saved in checkpoints; resuming a
            checkpoint saved under another name raises ``CheckpointError``.
        distributed: data-parallel training over MPI (:mod:`handgrad.distributed`, imported first): the
            updater is wrapped in a ``DistributedDataParallel`` (or pass one as ``updater``), ``fit`` splits
            its loaders over the ranks (a loader's batch size is the global batch), epoch totals and metrics
            are summed over the ranks, a stop on one rank stops all, and only rank 0 writes history,
            checkpoints, bars and epoch lines. ``None`` (default): on when ``handgrad.distributed.init()``
            turned it on (``handgrad run NAME --distributed``).
    """

    resume_hint: str = ""  # e.g. "resume with: mytool --resume {path}"; the API needs none: fit(..., resume=path)
    data_parallel: Callable[[Updater], Updater] | None = None  # set by importing handgrad.distributed
    distributed_default: bool = False  # set by handgrad.distributed.init(): Trainer(distributed=None) follows it

    def __init__(
        self,
        model: Any = None,
        optimizer: Any = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None,
        metrics: Any = ("accuracy",),
        callbacks: Sequence[Callback] | None = None,
        scheduler: Any = None,
        out_dir: str | os.PathLike[str] | None = None,
        grad_clip: float | None = None,
        progress: bool | None = None,
        verbose: bool = True,
        on_interrupt: str = "return",
        scheduler_monitor: str = "val_loss",
        updater: Updater | None = None,
        resume_hint: str | None = None,
        run_name: str | None = None,
        distributed: bool | None = None,
    ) -> None:
        if updater is None:
            if not callable(loss_fn):
                raise TypeError(f"Trainer: loss_fn must be callable, got {type(loss_fn).__name__}")
            if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
                raise TypeError(f"Trainer: optimizer must have step() and zero_grad(), got {type(optimizer).__name__}")
            if grad_clip is not None and not grad_clip > 0:
                raise ValueError(f"Trainer: grad_clip must be a positive number or None, got {grad_clip!r}")
            updater = StandardUpdater(model, optimizer, loss_fn, grad_clip)
        else:
            if not isinstance(updater, Updater):
                raise TypeError(f"Trainer: updater must be an Updater, got {type(updater).__name__}")
            if loss_fn is not None or grad_clip is not None:
                raise TypeError("Trainer: with an updater, give loss_fn and grad_clip to the updater")
            for name, given, own in (("model", model, updater.model), ("optimizer", optimizer, updater.optimizer)):
                if given is not None and given is not own:
                    raise ValueError(f"Trainer: the {name} differs from the updater's {name}")
        # data parallelism plugs in from handgrad.distributed (which imports this module, not the reverse):
        # importing it sets Trainer.data_parallel, and its init() sets Trainer.distributed_default
        if getattr(updater, "data_parallel", False):
            distributed = True
        elif distributed is None:
            distributed = Trainer.distributed_default
        self.distributed = bool(distributed)
        if self.distributed and not getattr(updater, "data_parallel", False):
            if Trainer.data_parallel is None:
                raise RuntimeError("Trainer(distributed=True): import handgrad.distributed (and call its init()) "
                                   "first")
            updater = Trainer.data_parallel(updater)
        # rank 0 of a data-parallel run alone writes (history, checkpoints, bars, epoch lines)
        self.is_writer = bool(getattr(updater, "is_writer", True))
        if on_interrupt not in ("return", "raise"):
            raise ValueError(f"Trainer: on_interrupt must be 'return' or 'raise', got {on_interrupt!r}")
        self.updater = updater
        self.run_name = run_name
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
        self.progress = progress
        self.verbose = verbose
        self.on_interrupt = on_interrupt
        if resume_hint is not None:
            self.resume_hint = resume_hint
        self.history = History()
        self.epoch = 0  # completed epochs
        self.stop_training = False
        self.interrupted = False
        self.interrupt_checkpoint: str | None = None
        self.train_loader: Any = None
        self.val_loader: Any = None
        self._clean: dict[str, Any] | None = None

    @property
    def model(self) -> Any:
        return self.updater.model

    @property
    def optimizer(self) -> Any:
        return self.updater.optimizer

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
        if self.distributed:  # this rank's part of the data
            shard = self.updater.shard_loader
            train_loader, val_loader = shard(train_loader, train=True), shard(val_loader, train=False)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.stop_training = False
        self.interrupted, self.interrupt_checkpoint = False, None
        if resume is not None:  # read and check the file before anything changes (a bad one changes nothing)
            resume_state = read_checkpoint(resume, self._updater_kind, self.run_name)
            check_model_state(self.model, resume_state["model"], os.fspath(resume))
        self._call("on_fit_start")
        if resume is not None:
            self.load_checkpoint(resume_state)
        # a run resumed from a Ctrl-C checkpoint is not itself interrupted (unless it is interrupted again)
        self.history.meta.pop("interrupted", None)
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
        self.stop_training = self._agree(self.stop_training)
        self._write_history()
        # the Ctrl-C snapshot is taken before the epoch is announced: once "epoch k" is printed, an interrupt
        # keeps epoch k
        self._clean = self.checkpoint_state(copy=True)
        if self.verbose and self.is_writer:
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
                step = self.updater.update(batch)
                n, value = step["size"], step["loss"]
                total += value * n
                count += n
                for m in self.metrics:
                    m.update(step["output"], step["target"])
                if bar is not None and hasattr(bar, "set_postfix"):
                    post = {"loss": f"{total / count:.4f}"}
                    if self.metrics:
                        post[self.metrics[0].name] = f"{self.metrics[0].compute():.4f}"
                    bar.set_postfix(post, refresh=False)
                self._call("on_batch_end", i, {"loss": value, "size": n})
                if self._agree(self.stop_training):
                    self.stop_training = True
                    break
        finally:
            if hasattr(bar, "close"):
                bar.close()
        if count == 0:
            raise ValueError("Trainer.fit: the training loader yielded no batches")
        return self._epoch_means(total, count)

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
                    step = self.updater.evaluate(batch)
                    n = step["size"]
                    total += step["loss"] * n
                    count += n
                    for m in self.metrics:
                        m.update(step["output"], step["target"])
        finally:
            self.model.train(was_training)
        if count == 0 and not self.distributed:
            raise ValueError("Trainer.evaluate: the loader yielded no batches")
        return self._epoch_means(total, count)

    def _epoch_means(self, total: float, count: int) -> dict[str, float]:
        """``{"loss": total / count, <metric>: ...}``; in a data-parallel run the sample-weighted sums over
        all ranks (the metrics are sample-weighted means, so ``value * count`` summed is exact)."""
        values = [m.compute() for m in self.metrics]
        if self.distributed:
            sums = self.updater.all_reduce_sum([total, count, *(v * count if count else 0.0 for v in values)])
            total, count = sums[0], sums[1]
            if count == 0:
                raise ValueError("Trainer: the loaders yielded no batches on any rank")
            values = [v / count for v in sums[2:]]
        out = {"loss": total / count}
        out.update({m.name: v for m, v in zip(self.metrics, values)})
        return out

    def _agree(self, flag: bool) -> bool:
        """``flag`` on every rank if on any (data-parallel runs must stop together); ``flag`` otherwise."""
        return self.updater.agree(flag) if self.distributed else bool(flag)

    @property
    def _updater_kind(self) -> str:
        """The step's class name in checkpoints: the wrapped one under data parallelism, so one-process and
        data-parallel runs resume each other's checkpoints."""
        return type(getattr(self.updater, "updater", self.updater)).__name__ if self.distributed \
            else type(self.updater).__name__

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
            "updater": self._updater_kind,
            "run_name": self.run_name,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if hasattr(self.optimizer, "state_dict") else {},
            "updater_state": self.updater.state_dict(),
            "history": self.history.state_dict(),
            "callbacks": {_cb_key(i, cb): cb.state_dict() for i, cb in enumerate(self.callbacks)},
            # JSON text: the PCG64 state holds 128-bit integers
            "rng": json.dumps(get_rng().bit_generator.state),
        }
        state["history"]["meta"].pop("interrupted", None)  # a checkpoint is a resumable, not an interrupted, run
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
        """Write ``checkpoint_state()`` (or ``state``) to ``path`` atomically; returns the path. (In a
        data-parallel run every rank builds the state, a collective, and rank 0 alone writes it.)"""
        state = self.checkpoint_state() if state is None else state
        return write_checkpoint(path, state) if self.is_writer else os.fspath(path)

    def load_checkpoint(self, path_or_state: str | os.PathLike[str] | dict[str, Any]) -> None:
        """Restore the model, optimizer, updater, scheduler, callbacks, history, epoch and RNG from a checkpoint.

        Raises ``CheckpointError`` (nothing restored) for a file or dict that is not a Trainer checkpoint of
        this kind of run and model."""
        if isinstance(path_or_state, dict):
            state, where = path_or_state, "the given state"
            check_state(state, where, self._updater_kind, self.run_name)
        else:
            where = os.fspath(path_or_state)
            state = read_checkpoint(where, self._updater_kind, self.run_name)
        check_model_state(self.model, state["model"], where)
        self.model.load_state_dict(state["model"])
        if hasattr(self.optimizer, "load_state_dict"):
            self.optimizer.load_state_dict(state["optimizer"])
        self.updater.load_state_dict(state.get("updater_state", {}))
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
        self.interrupted = True
        self.history.meta["interrupted"] = True
        if self.out_dir is not None and self._clean is not None:
            self.interrupt_checkpoint = self.save_checkpoint(os.path.join(self.out_dir, "interrupted.safetensors"),
                                                             self._clean)
            saved = f"checkpoint saved to {self.interrupt_checkpoint}"
            if self.resume_hint:
                saved += "; " + self.resume_hint.format(path=self.interrupt_checkpoint)
        else:
            saved = "not saved (no out_dir)"
        where = (f"rolled back to the end of epoch {self.epoch}" if self.epoch
                 else "no epoch was completed, so nothing was trained")
        print(f"\nTrainer: interrupted during epoch {self.epoch + 1}; {where}; {saved}", file=sys.stderr, flush=True)
        return self.history.rows[-1] if len(self.history) else {}

    # -- helpers --------------------------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _write_history(self) -> None:
        if self.out_dir is None or not len(self.history) or not self.is_writer:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        self.history.to_csv(os.path.join(self.out_dir, "history.csv"))
        self.history.to_json(os.path.join(self.out_dir, "history.json"))

    def _bar(self, loader: Iterable[Any], desc: str) -> Any:
        show = self.progress if self.progress is not None else _stderr_is_tty()
        if not show or not self.is_writer:
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
