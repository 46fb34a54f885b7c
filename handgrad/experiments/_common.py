"""Helpers shared by the experiments: Fashion-MNIST splits, the standard training run (Trainer + EarlyStopping +
ModelCheckpoint + learning curves + test evaluation), and the record of the data a run used.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.data import DataLoader, FashionMNIST, TensorDataset
from handgrad.errors import ExperimentError
from handgrad.train import EarlyStopping, ModelCheckpoint, Trainer
from handgrad.train.plots import plot_history

# Fashion-MNIST training-set statistics of pixel/255 (the usual normalisation constants).
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530


@dataclass
class Splits:
    """Normalised float32 images ``(N, 1, 28, 28)`` and int64 labels for train / validation / test."""

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_val: numpy.ndarray
    y_val: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    data: dict[str, Any] | None = field(default=None, compare=False)  # the files used (``data_record``)

    def sizes(self) -> dict[str, int]:
        return {"n_train": len(self.y_train), "n_val": len(self.y_val), "n_test": len(self.y_test)}


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_record(*paths: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``results.json`` says about the data a run used: the path(s) and a short fingerprint (the first 12
    hex digits of a SHA-256 over every file's relative name and bytes, so a different copy or a changed file
    gives a different fingerprint)."""
    h = hashlib.sha256()
    shown = []
    for p in paths:
        root = Path(p).expanduser().resolve()
        shown.append(str(root))
        files = sorted(q for q in root.rglob("*") if q.is_file()) if root.is_dir() else [root]
        for q in files:
            st = q.stat()
            h.update(str(q.relative_to(root) if root.is_dir() else q.name).encode())
            h.update(_file_digest(str(q), st.st_size, st.st_mtime_ns).encode())
    return {"path": shown[0] if len(shown) == 1 else shown, "fingerprint": h.hexdigest()[:12]}


def _normalise(images: numpy.ndarray) -> numpy.ndarray:
    x = images.astype(numpy.float32) / 255.0
    return ((x - FASHION_MEAN) / FASHION_STD).reshape(len(x), 1, 28, 28)


@functools.lru_cache(maxsize=2)
def _load_fashion(data: str | None) -> tuple[Any, Any]:
    """Both splits, read once per process (decompressing the IDX files takes about a second)."""
    try:
        return FashionMNIST(data, train=True), FashionMNIST(data, train=False)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e


def fashion_mnist_record(data: str | None) -> dict[str, Any]:
    """``data_record`` of the Fashion-MNIST folder that ``data`` (or the default search) resolves to."""
    train, _ = _load_fashion(data)
    return data_record(train.root)


def fashion_mnist_splits(
    data: str | None,
    seed: int,
    val_size: int = 6000,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Splits:
    """Fashion-MNIST with a validation set held out of the 60,000 training images.

    The split is a seeded random permutation of the training set: the first ``val_size`` images are the
    validation set, the next ``train_size`` (default: all the rest) the training set. ``test_size`` keeps the
    first images of the official 10,000-image test set (default: all). Missing or unreadable files become an
    ``ExperimentError`` (one line from the CLI).
    """
    train, test = _load_fashion(data)
    n = len(train.targets)
    if val_size >= n:
        raise ExperimentError(f"validation size {val_size} leaves no training images out of {n}")
    perm = numpy.random.default_rng(seed).permutation(n)
    val_idx = perm[:val_size]
    train_idx = perm[val_size:] if train_size is None else perm[val_size : val_size + train_size]
    if train_size is not None and len(train_idx) < train_size:
        raise ExperimentError(f"asked for {train_size} training images but only {n - val_size} are left")
    x_test, y_test = test.data, test.targets
    if test_size is not None:
        x_test, y_test = x_test[:test_size], y_test[:test_size]
    return Splits(
        _normalise(train.data[train_idx]), train.targets[train_idx],
        _normalise(train.data[val_idx]), train.targets[val_idx],
        _normalise(x_test), y_test, fashion_mnist_record(data),
    )


def loaders(splits: Splits, batch_size: int, seed: int, eval_batch_size: int = 1000) -> tuple[Any, Any, Any]:
    """Shuffled training loader (its own generator, seeded: saved in checkpoints) and ordered val/test loaders."""
    train = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=batch_size, shuffle=True,
                       seed=seed)
    val = DataLoader(TensorDataset(splits.x_val, splits.y_val), batch_size=eval_batch_size)
    test = DataLoader(TensorDataset(splits.x_test, splits.y_test), batch_size=eval_batch_size)
    return train, val, test


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def fit_classifier(
    opts: Any,
    model: Any,
    optimizer: Any,
    splits: Splits,
    patience: int,
    title: str,
    scheduler: Any = None,
    min_delta: float = 0.0,
) -> tuple[dict[str, Any], Any]:
    """The standard run: train with early stopping on ``val_loss`` (best weights restored), checkpoints
    ``best``/``last`` in ``opts.out``, history CSV/JSON, ``learning_curves.png``; then the test set.

    Returns ``(results, trainer)``; ``results`` holds the final test/val/train metrics, the early-stopping
    point, epochs run, parameter count and timings.
    """
    train_loader, val_loader, test_loader = loaders(splits, opts.batch_size, opts.seed)
    es = EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta, restore_best_weights=True,
                       verbose=True)
    ckpt = ModelCheckpoint(opts.out, monitor="val_loss")
    trainer = Trainer(model, optimizer, F.cross_entropy, metrics=("accuracy",), callbacks=[es, ckpt],
                      scheduler=scheduler, out_dir=opts.out, progress=opts.progress, run_name=opts.experiment)
    sizes = splits.sizes()
    print(f"{title}: {count_parameters(model):,} parameters; {sizes['n_train']:,} train / {sizes['n_val']:,} val / "
          f"{sizes['n_test']:,} test images; up to {opts.epochs} epochs, batch {opts.batch_size}, lr {opts.lr}",
          flush=True)
    start = time.perf_counter()
    # a --resume file that does not fit raises CheckpointError (one line from the CLI)
    history = trainer.fit(train_loader, val_loader, epochs=opts.epochs, resume=opts.resume)
    train_time = time.perf_counter() - start
    test = trainer.evaluate(test_loader)
    val = trainer.evaluate(val_loader)
    meta = history.meta.get("early_stopping", {})
    best_epoch = int(meta.get("best_epoch") or 0)
    results: dict[str, Any] = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "best_epoch": best_epoch,
        "stopped_epoch": int(meta.get("stopped_epoch") or 0),
        "epochs_run": len(history),
        "max_epochs": opts.epochs,
        "patience": patience,
        "train_accuracy_at_best": history["accuracy"][best_epoch - 1] if best_epoch else None,
        "parameters": count_parameters(model),
        "train_time_s": round(train_time, 1),
        "mean_epoch_time_s": round(float(numpy.mean(history["time"])), 2) if len(history) else None,
        **sizes,
        "data": splits.data,
    }
    if history.meta.get("interrupted"):
        results["interrupted"] = True
    scores = f"test accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f}"
    if not len(history):  # Ctrl-C before the first epoch ended: nothing was trained
        print(f"{title}: interrupted before epoch 1 ended; {scores} of the untrained weights", flush=True)
    else:
        if history.meta.get("interrupted"):
            stop = f"interrupted after epoch {len(history)}"
        elif results["stopped_epoch"]:
            stop = f"stopped early after epoch {results['stopped_epoch']}"
        else:
            stop = "ran all epochs"
        best = f"best val_loss at epoch {best_epoch} (weights restored)" if best_epoch else "no best epoch yet"
        print(f"{title}: {stop}; {best}; {scores}", flush=True)
    if len(history):
        png = os.path.join(opts.out, "learning_curves.png")
        plot_history(history, png, title=f"{title} (test accuracy {test['accuracy']:.4f})")
        print(f"learning curves: {png}")
    candidates = [ckpt.best_path, ckpt.last_path] if len(history) else []
    if history.meta.get("interrupted"):
        candidates.append(os.path.join(opts.out, "interrupted.safetensors"))
    saved = [p for p in candidates if p and os.path.exists(p)]
    if saved:
        print(f"checkpoints: {', '.join(saved)}")
    return results, trainer
