"""What the siamese and triplet experiments share: the seen/unseen Fashion-MNIST split, a small embedding CNN,
batch iterators (pairs, PK batches), the Trainer run with early stopping, evaluation and the 2-D scatter plot.

Train on classes 0-6 (T-shirt ... Shirt), evaluate retrieval and verification on classes 7-9 (Sneaker, Bag,
Ankle boot) that the network never saw: the embedding has to generalise beyond its training labels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy

from handgrad import nn
from handgrad.engine.backend import module_device
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError

SEEN_CLASSES = tuple(range(7))
UNSEEN_CLASSES = (7, 8, 9)
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


class EmbeddingNet(nn.Module):
    """phi: (N, 1, 28, 28) -> (N, D).  conv5(1->8)-ReLU-pool2, conv5(8->16)-ReLU-pool2, fc 256->64-ReLU, fc 64->D."""

    def __init__(self, embedding_dim: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, embedding_dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"EmbeddingNet: expected input (N, 1, 28, 28), got {x.shape}")
        return self.head(self.features(x))


@dataclass
class SeenUnseen:
    """Normalised images (N, 1, 28, 28) float32: train / val from the seen classes of the training set, test from
    the unseen classes of the official test set."""

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_val: numpy.ndarray
    y_val: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray


def seen_unseen_splits(data: str | None, seed: int, per_class_train: int, per_class_val: int,
                       per_class_test: int) -> SeenUnseen:
    from handgrad.data import FashionMNIST

    try:
        train, test = FashionMNIST(data, train=True), FashionMNIST(data, train=False)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e
    rng = numpy.random.default_rng(seed)

    def norm(x: numpy.ndarray) -> numpy.ndarray:
        return ((x.astype(numpy.float32) / 255.0 - FASHION_MEAN) / FASHION_STD)[:, None]

    tr, va = [], []
    for c in SEEN_CLASSES:
        idx = rng.permutation(numpy.nonzero(train.targets == c)[0])
        tr.append(idx[:per_class_train])
        va.append(idx[per_class_train : per_class_train + per_class_val])
    te = [rng.permutation(numpy.nonzero(test.targets == c)[0])[:per_class_test] for c in UNSEEN_CLASSES]
    tr_i, va_i, te_i = (rng.permutation(numpy.concatenate(v)) for v in (tr, va, te))
    return SeenUnseen(norm(train.data[tr_i]), train.targets[tr_i], norm(train.data[va_i]), train.targets[va_i],
                      norm(test.data[te_i]), test.targets[te_i])


class PairBatches:
    """Per epoch, ``n_pairs`` fresh random pairs (half similar) in batches of ``batch_size``:
    yields ((x1, x2), similar). ``fixed=True`` draws the same pairs every epoch (for validation)."""

    def __init__(self, x: numpy.ndarray, y: numpy.ndarray, n_pairs: int, batch_size: int, seed: int,
                 fixed: bool = False) -> None:
        self.x, self.y, self.n_pairs, self.batch_size, self.seed, self.fixed = x, y, n_pairs, batch_size, seed, fixed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n_pairs // self.batch_size)

    def __iter__(self) -> Any:
        from handgrad.metric.sampling import sample_pairs

        rng = numpy.random.default_rng([self.seed, 0 if self.fixed else self.epoch])
        i, j, s = sample_pairs(self.y, self.n_pairs, rng)
        order = rng.permutation(self.n_pairs)
        for k in range(0, self.n_pairs, self.batch_size):
            b = order[k : k + self.batch_size]
            yield (Tensor(self.x[i[b]]), Tensor(self.x[j[b]])), Tensor(s[b])


class PKBatches:
    """``n_batches`` batches of P classes x K images per epoch: yields (x, labels). ``fixed`` as above."""

    def __init__(self, x: numpy.ndarray, y: numpy.ndarray, p: int, k: int, n_batches: int, seed: int,
                 fixed: bool = False) -> None:
        self.x, self.y, self.p, self.k, self.n_batches, self.seed, self.fixed = x, y, p, k, n_batches, seed, fixed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Any:
        from handgrad.metric.sampling import balanced_batch_indices

        rng = numpy.random.default_rng([self.seed, 0 if self.fixed else self.epoch])
        for _ in range(self.n_batches):
            b = balanced_batch_indices(self.y, self.p, self.k, rng)
            yield Tensor(self.x[b]), Tensor(self.y[b])


def embed(model: nn.Module, x: numpy.ndarray, batch_size: int = 500) -> numpy.ndarray:
    model.eval()
    out = []
    dev = module_device(model)
    with no_grad():
        for k in range(0, len(x), batch_size):
            out.append(model(Tensor(dev.send(x[k : k + batch_size]))).numpy().astype(numpy.float64))
    model.train()
    return numpy.concatenate(out)


def retrieval_report(emb_val: numpy.ndarray, y_val: numpy.ndarray, emb_test: numpy.ndarray, y_test: numpy.ndarray,
                     metric: str, seed: int, prefix: str = "") -> dict[str, float]:
    """recall@{1,2,4,8} and mAP@R on the unseen test classes; verification accuracy on 2,000 unseen pairs with the
    threshold chosen on 2,000 pairs of the seen validation classes."""
    from handgrad.metric.evaluation import (
        best_threshold,
        map_at_r,
        pair_distances,
        recall_at_k,
        verification_accuracy,
    )
    from handgrad.metric.sampling import sample_pairs

    out: dict[str, float] = {}
    rec = recall_at_k(emb_test, y_test, (1, 2, 4, 8), metric)
    for k, v in rec.items():
        out[f"{prefix}recall@{k}"] = v
    out[f"{prefix}mAP@R"] = map_at_r(emb_test, y_test, metric)
    rng = numpy.random.default_rng(seed + 7)
    vi, vj, vs = sample_pairs(y_val, 2000, rng)
    ti, tj, ts = sample_pairs(y_test, 2000, rng)
    thr = best_threshold(pair_distances(emb_val, vi, vj, metric), vs)
    out[f"{prefix}verification_accuracy"] = verification_accuracy(pair_distances(emb_test, ti, tj, metric), ts, thr)
    out[f"{prefix}verification_threshold"] = thr
    return out


def pca_2d(e: numpy.ndarray) -> numpy.ndarray:
    """The first two principal components of the rows of e (N, D) -> (N, 2)."""
    c = e - e.mean(0)
    if c.shape[1] <= 2:
        return c[:, :2] if c.shape[1] == 2 else numpy.c_[c, numpy.zeros(len(c))]
    _, _, vt = numpy.linalg.svd(c, full_matrices=False)
    return c @ vt[:2].T


def plot_embedding(emb: numpy.ndarray, labels: numpy.ndarray, path: str, title: str) -> str:
    """Scatter of the 2-D PCA projection of the embeddings, one colour per class; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    xy = pca_2d(emb)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    for c in numpy.unique(labels):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.6, label=f"{c}: {CLASS_NAMES[int(c)]}")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fit_embedding(opts: Any, model: nn.Module, loss_fn: Any, train_loader: Any, val_loader: Any, patience: int,
                  title: str, unpack: Any = None) -> tuple[dict[str, Any], Any]:
    """Trainer + EarlyStopping(val_loss, best weights restored) + learning curves with the stopping point."""
    from handgrad.optim import Adam
    from handgrad.train import EarlyStopping, StandardUpdater, Trainer
    from handgrad.train.plots import plot_history

    class _Updater(StandardUpdater):  # batches that are not (inputs, targets) pairs
        def unpack_batch(self, batch: Any) -> tuple[Any, Any]:
            return batch if unpack is None else unpack(batch)

    es = EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True, verbose=True)
    trainer = Trainer(updater=_Updater(model, Adam(model.parameters(), lr=opts.lr), loss_fn), metrics=(),
                      callbacks=[es], out_dir=opts.out, progress=opts.progress)
    start = time.perf_counter()
    history = trainer.fit(train_loader, val_loader, epochs=opts.epochs)
    meta = history.meta.get("early_stopping", {})
    best = int(meta.get("best_epoch") or 0)
    png = os.path.join(opts.out, "learning_curves.png")
    plot_history(history, png, title=title)
    return {
        "best_epoch": best,
        "stopped_epoch": int(meta.get("stopped_epoch") or 0),
        "epochs_run": len(history),
        "best_val_loss": float(meta.get("best")) if meta.get("best") is not None else None,
        "train_time_s": round(time.perf_counter() - start, 1),
        "learning_curves": png,
    }, trainer


__all__ = [
    "EmbeddingNet", "PKBatches", "PairBatches", "SEEN_CLASSES", "UNSEEN_CLASSES", "embed", "fit_embedding",
    "pca_2d", "plot_embedding", "retrieval_report", "seen_unseen_splits",
]
