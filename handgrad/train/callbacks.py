"""Callbacks: code the ``Trainer`` calls at fixed points of ``fit``.

Hooks (all optional; ``self.trainer`` is set before ``on_fit_start``; epochs are numbered from 1)::

    on_fit_start()                      before the first epoch (also when resuming)
    on_epoch_start(epoch)
    on_batch_end(batch, logs)           after each optimizer step; logs = {"loss": batch loss, "size": n}
    on_epoch_end(epoch, logs)           logs = the epoch's row of the history (loss, metrics, val_*, lr)
    on_fit_end(logs)                    after the last epoch (also after early stopping / Ctrl-C)

A callback stops training by setting ``self.trainer.stop_training = True``. Callbacks run in the order
given, except that those with a lower ``order`` run first: the LR scheduler (-10) steps before anything
saves, and ``ModelCheckpoint`` (100) saves after every other callback has updated its state, so a
checkpoint holds one consistent moment. A callback with ``state_dict``/``load_state_dict`` has its state
saved in checkpoints and restored by ``Trainer.fit(..., resume=path)``.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handgrad.train.trainer import Trainer


class Callback:
    """Base class: override the hooks you need."""

    order: int = 0
    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_fit_start(self) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, logs: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _resolve_mode(mode: str, monitor: str, who: str) -> str:
    if mode not in ("min", "max", "auto"):
        raise ValueError(f"{who}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    if mode == "auto":
        # accuracies and scores grow; losses and errors shrink
        growing = ("acc", "score", "bleu", "auc", "f1", "iou", "map", "match", "recall", "precision")
        return "max" if any(w in monitor for w in growing) else "min"
    return mode


def _needs_val_loader(trainer: Any, monitor: str) -> bool:
    """A column the Trainer's own validation writes (``val_loss``, ``val_<metric>``) with no val_loader given.
    (Other ``val_*`` columns may come from a callback, e.g. a validation that decodes.)"""
    if not monitor.startswith("val_") or trainer.val_loader is not None:
        return False
    return monitor[4:] in {"loss", *(m.name for m in getattr(trainer, "metrics", []))}


def _monitored(logs: dict[str, Any], monitor: str, who: str) -> float:
    if monitor not in logs or logs[monitor] is None:
        hint = " (pass a val_loader to fit, or monitor a training column)" if monitor.startswith("val_") else ""
        raise KeyError(f"{who}: monitor {monitor!r} is not in the epoch logs {sorted(logs)}{hint}")
    return float(logs[monitor])


class _Improvement:
    """Tracks the best value of a monitored quantity: improved iff better than best by more than min_delta."""

    def __init__(self, mode: str, min_delta: float) -> None:
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if mode == "min" else -math.inf

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' EarlyStopping).

    The course's rule: stop at the point where the validation error stops decreasing (the generalisation
    capacity stops increasing). An epoch *improves* when ``value < best - min_delta`` (mode ``min``) or
    ``value > best + min_delta`` (mode ``max``); ``mode="auto"`` picks ``max`` for accuracy-like names.
    After ``patience`` epochs in a row without improvement, training stops (``patience=0``: at the first
    one). ``min_epochs``: training cannot stop before that epoch (patience starts counting there; the best
    epoch is tracked from the start), for scores that sit near zero in the first epochs (a translator's
    BLEU). With ``restore_best_weights=True`` the model gets back the weights of the best epoch when
    ``fit`` ends (however it ends). The outcome is recorded in ``trainer.history.meta["early_stopping"]``:
    ``{"monitor", "mode", "best_epoch", "best", "stopped_epoch", "restored"}``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        verbose: bool = False,
        min_epochs: int = 0,
    ) -> None:
        if int(patience) != patience or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be a non-negative integer, got {patience!r}")
        if int(min_epochs) != min_epochs or min_epochs < 0:
            raise ValueError(f"EarlyStopping: min_epochs must be a non-negative integer, got {min_epochs!r}")
        if not min_delta >= 0 and not min_delta <= 0:  # NaN
            raise ValueError("EarlyStopping: min_delta must be a number, got NaN")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.min_epochs = int(min_epochs)
        self._reset()

    def _reset(self) -> None:
        self._tracker = _Improvement(self.mode, self.min_delta)
        self.wait = 0
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_weights: dict[str, Any] | None = None
        self.restored = False

    @property
    def best(self) -> float:
        return self._tracker.best

    def on_fit_start(self) -> None:
        self._reset()
        if _needs_val_loader(self.trainer, self.monitor):
            raise ValueError(
                f"EarlyStopping: monitor {self.monitor!r} needs a val_loader in Trainer.fit (or monitor 'loss')"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._tracker.improved(value):
            self._tracker.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()  # already a copy
            return
        if epoch < self.min_epochs:
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.verbose:
                print(
                    f"EarlyStopping: {self.monitor} has not improved for {self.wait} epochs "
                    f"(best {self.best:.4f} at epoch {self.best_epoch}); stopping after epoch {epoch}",
                    file=sys.stderr,
                )

    def on_fit_end(self, logs: dict[str, Any]) -> None:
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch != self.trainer.epoch:
            self.trainer.model.load_state_dict(self.best_weights)
            self.restored = True
            if self.verbose:
                print(f"EarlyStopping: restored the weights of epoch {self.best_epoch}", file=sys.stderr)
        self.trainer.history.meta["early_stopping"] = {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_epoch": self.best_epoch,
            "best": self.best,
            "stopped_epoch": self.stopped_epoch,
            "restored": self.restored,
        }

    def state_dict(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }
        if self.best_weights is not None:
            s["best_weights"] = dict(self.best_weights)
        return s

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self._tracker.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.stopped_epoch = int(state["stopped_epoch"])
        bw = state.get("best_weights")
        self.best_weights = None if bw is None else dict(bw)


class ModelCheckpoint(Callback):
    """Save full training checkpoints into ``dirpath`` with ``handgrad.save``.

    ``last.safetensors`` after every epoch (``save_last``) and ``best.safetensors`` whenever ``monitor``
    improves (``save_best``). A checkpoint holds the model, optimizer and scheduler state dicts, the
    epoch, the history, the callbacks' state and the random generator, so ``Trainer.fit(...,
    resume=dirpath/"last.safetensors")`` continues exactly where the run stopped. ``best_path`` /
    ``last_path`` name the files; ``best_epoch`` the epoch in ``best``.
    """

    order = 100

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best: bool = True,
        save_last: bool = True,
        min_delta: float = 0.0,
        verbose: bool = False,
    ) -> None:
        if not (save_best or save_last):
            raise ValueError("ModelCheckpoint: save_best and save_last are both False, so nothing would be saved")
        self.dirpath = os.fspath(dirpath)
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.save_best = save_best
        self.save_last = save_last
        self.min_delta = min_delta
        self.verbose = verbose
        self.best_path = os.path.join(self.dirpath, "best.safetensors")
        self.last_path = os.path.join(self.dirpath, "last.safetensors")
        self._tracker = _Improvement(self.mode, min_delta)
        self.best_epoch = 0

    def on_fit_start(self) -> None:
        if self.save_best and _needs_val_loader(self.trainer, self.monitor):
            raise ValueError(
                f"ModelCheckpoint: monitor {self.monitor!r} needs a val_loader in Trainer.fit (or monitor 'loss')"
            )
        os.makedirs(self.dirpath, exist_ok=True)
        self._tracker = _Improvement(self.mode, self.min_delta)
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        is_best = False
        if self.save_best:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if self._tracker.improved(value):
                self._tracker.best = value
                self.best_epoch = epoch
                is_best = True
        # state first (it includes this callback's updated best), then the files
        state = self.trainer.checkpoint_state()
        if is_best:
            self.trainer.save_checkpoint(self.best_path, state)
            if self.verbose:
                print(f"ModelCheckpoint: epoch {epoch} {self.monitor}={logs[self.monitor]:.4f} -> {self.best_path}")
        if self.save_last:
            self.trainer.save_checkpoint(self.last_path, state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self._tracker.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._tracker.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])


def _wants_metric(scheduler: Any) -> bool:
    """ReduceLROnPlateau-like: ``step(metrics)`` takes the monitored value."""
    if any(c.__name__ == "ReduceLROnPlateau" for c in type(scheduler).__mro__):
        return True
    try:
        params = list(inspect.signature(scheduler.step).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name == "metrics" and params[0].default is inspect.Parameter.empty


class LRSchedulerCallback(Callback):
    """Step an LR scheduler once per epoch (``interval="epoch"``) or per optimizer step (``"batch"``).

    A ``ReduceLROnPlateau`` (any scheduler whose ``step`` takes ``metrics``) gets the epoch's ``monitor``
    value (default ``val_loss``). It runs before the other callbacks so that checkpoints hold the stepped
    scheduler. ``Trainer(scheduler=s)`` is shorthand for this callback.
    """

    order = -10

    def __init__(self, scheduler: Any, monitor: str = "val_loss", interval: str = "epoch") -> None:
        if interval not in ("epoch", "batch"):
            raise ValueError(f"LRSchedulerCallback: interval must be 'epoch' or 'batch', got {interval!r}")
        if not hasattr(scheduler, "step"):
            raise TypeError(f"LRSchedulerCallback: {type(scheduler).__name__} has no step() method")
        self.scheduler = scheduler
        self.monitor = monitor
        self.interval = interval
        self.wants_metric = _wants_metric(scheduler)
        if self.wants_metric and interval == "batch":
            raise ValueError("LRSchedulerCallback: ReduceLROnPlateau steps on an epoch metric; use interval='epoch'")

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.interval != "epoch":
            return
        if self.wants_metric:
            self.scheduler.step(_monitored(logs, self.monitor, f"LRSchedulerCallback({type(self.scheduler).__name__})"))
        else:
            self.scheduler.step()

    # the scheduler's own state is saved by the Trainer under "scheduler"


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks: Any) -> None:
        allowed = {"on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end"}
        bad = set(hooks) - allowed
        if bad:
            raise TypeError(f"LambdaCallback: unknown hooks {sorted(bad)}; allowed: {sorted(allowed)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


def clone_state(state: Any) -> Any:
    """A deep copy of a (nested) state dict, so later in-place updates do not change it."""
    return copy.deepcopy(state)
