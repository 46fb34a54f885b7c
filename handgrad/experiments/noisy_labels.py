"""``handgrad run noisy-labels``: Xiao et al. (2015)'s noise model against naive training on noisy labels.

Fashion-MNIST, a seeded training pool whose labels are 40% corrupted (``--rate``), in three settings:
``symmetric`` (a uniformly drawn other label), ``confusing`` (each class flipped to its confusing partner:
shirt <-> T-shirt, pullover <-> coat, sandal -> sneaker -> ankle boot -> sandal, ...) and ``mixed`` (half each).
A small clean subset (``--clean``, also part of the pool) carries its true label. Three classifiers, each an MLP
with early stopping on the accuracy of a clean validation set (the same for all three), then the official test set:

* ``clean-only``: trained on the clean subset alone;
* ``naive``: trained on the whole pool as labelled (the clean subset with its true labels);
* ``noise-model``: the two-path model (clean-label path initialised from ``clean-only``, noise-type path
  784-64-3), trained EM-style on the same data: per mini-batch the E-step posteriors q(y), q(z) are the soft
  targets of the two paths, and after every epoch C (the confusing-noise matrix, started from the clean subset's
  label pairs) gets its M-step. The test accuracy is the clean path's.

Results: a table (``results.md`` and ``results.json``) of test accuracy per method and noise setting, learning
curves per run with the early-stopping point, and how well the noise posterior flags corrupted training labels.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

import handgrad.functional as F
from handgrad import nn
from handgrad.data import DataLoader, FashionMNIST, TensorDataset
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import manual_seed
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_record
from handgrad.optim import Adam
from handgrad.robust.noisy_labels import (
    NoisyLabelModel,
    confusion_from_pairs,
    corrupt_labels,
    joint_posterior,
    update_confusion,
)
from handgrad.train import Callback, EarlyStopping, MeanMetric, Trainer
from handgrad.train.plots import plot_history

SETTINGS = ("symmetric", "confusing", "mixed")


def add_arguments(p: Any) -> None:
    p.add_argument("--rate", type=float, default=0.4, help="share of corrupted training labels (default 0.4)")
    p.add_argument("--pool", type=int, default=10000, help="training images with (noisy) labels (default 10000)")
    p.add_argument("--clean", type=int, default=1000, help="of which with a known clean label (default 1000)")
    p.add_argument("--val", type=int, default=1000, help="clean validation images (default 1000)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated noise settings")
    p.add_argument("--hidden", type=int, default=256, help="hidden units of the clean-label MLP (default 256)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience (default 4)")


def _mlp(hidden: int, out: int) -> Any:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, out))


def _clean_accuracy(out: Any, target: Any) -> float:
    """Accuracy of the clean-label path: out is logits or (y_logits, z_logits); target (N,) or (N, 2)."""
    logits = out[0] if isinstance(out, tuple) else out
    t = target.numpy()
    t = t[:, 1] if t.ndim == 2 else t
    return float((logits.numpy().argmax(1) == t).mean())


def run(opts: Any) -> dict[str, Any]:
    settings = [s for s in opts.settings.split(",") if s]
    if any(s not in SETTINGS for s in settings) or not settings:
        raise ExperimentError(f"--settings must be a comma-separated subset of {SETTINGS}, got {opts.settings!r}")
    if not 0 <= opts.rate < 1:
        raise ExperimentError(f"--rate must be in [0, 1), got {opts.rate}")
    if not 10 <= opts.clean <= opts.pool:
        raise ExperimentError(f"--clean must be between 10 and --pool ({opts.pool}), got {opts.clean}")
    pool, n_clean, n_val, n_test = opts.pool, opts.clean, opts.val, None
    if opts.quick:
        pool, n_clean, n_val, n_test = 600, 150, 200, 500
    try:
        train, test = FashionMNIST(opts.data, train=True), FashionMNIST(opts.data, train=False)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e

    def norm(x: numpy.ndarray) -> numpy.ndarray:
        return ((x.astype(numpy.float32) / 255.0 - 0.2860) / 0.3530)[:, None]

    perm = numpy.random.default_rng(opts.seed).permutation(len(train.targets))
    pool_i, val_i = perm[:pool], perm[pool : pool + n_val]
    x_pool, y_pool = norm(train.data[pool_i]), train.targets[pool_i]
    x_val, y_val = norm(train.data[val_i]), train.targets[val_i]
    x_test, y_test = norm(test.data[:n_test]), test.targets[:n_test]
    clean_mask = numpy.zeros(pool, bool)
    clean_mask[:n_clean] = True  # the pool is already a random permutation
    val_loader = DataLoader(TensorDataset(x_val, numpy.stack([y_val, y_val], 1)), batch_size=1000)
    test_loader = DataLoader(TensorDataset(x_test, numpy.stack([y_test, y_test], 1)), batch_size=1000)

    def fit(model: Any, loss_fn: Any, x: numpy.ndarray, t: numpy.ndarray, tag: str, extra: list | None = None):
        es = EarlyStopping(monitor="val_accuracy", mode="max", patience=opts.patience, restore_best_weights=True)
        loader = DataLoader(TensorDataset(x, t), batch_size=opts.batch_size, shuffle=True, seed=opts.seed)
        trainer = Trainer(model, Adam(model.parameters(), lr=opts.lr), loss_fn,
                          metrics=(MeanMetric(_clean_accuracy, "accuracy"),), callbacks=[es, *(extra or [])],
                          out_dir=os.path.join(opts.out, tag), progress=opts.progress, verbose=False)
        history = trainer.fit(loader, val_loader, epochs=opts.epochs)
        meta = history.meta.get("early_stopping", {})
        plot_history(history, os.path.join(opts.out, tag, "learning_curves.png"), title=tag)
        acc = trainer.evaluate(test_loader)["accuracy"]
        info = {"test_accuracy": acc, "best_epoch": int(meta.get("best_epoch") or 0),
                "stopped_epoch": int(meta.get("stopped_epoch") or 0), "epochs_run": len(history)}
        print(f"  {tag}: test accuracy {acc:.4f} (best epoch {info['best_epoch']}, ran {info['epochs_run']})",
              flush=True)
        return info

    def ce(out: Any, t: Any) -> Any:
        return F.cross_entropy(out, Tensor(t.numpy()[:, 1]))

    results: dict[str, Any] = {"rate": opts.rate, "pool": pool, "clean": n_clean, "val": n_val,
                               "test": len(y_test)}
    print(f"noisy-labels: pool {pool} (clean subset {n_clean}), clean val {n_val}, test {len(y_test)}; "
          f"{opts.rate:.0%} of the labels corrupted", flush=True)
    # 1. clean subset only (independent of the noise)

    manual_seed(opts.seed)
    clean_net = _mlp(opts.hidden, 10)
    yc = y_pool[clean_mask]
    results["clean-only"] = fit(clean_net, ce, x_pool[clean_mask], numpy.stack([yc, yc], 1), "clean-only")
    clean_state = clean_net.state_dict()
    table = {"clean-only": {}, "naive": {}, "noise-model": {}}
    for setting in settings:
        rng = numpy.random.default_rng([opts.seed, SETTINGS.index(setting)])
        noisy, z_true = corrupt_labels(y_pool, opts.rate, setting, 10, rng)
        observed = numpy.where(clean_mask, y_pool, noisy)  # what naive training sees
        print(f"{setting}: {(noisy != y_pool).mean():.3f} of the pool's labels are wrong", flush=True)
        # 2. naive
        manual_seed(opts.seed)
        naive = _mlp(opts.hidden, 10)
        table["naive"][setting] = fit(naive, ce, x_pool, numpy.stack([observed, observed], 1), f"naive-{setting}")
        # 3. the noise model: y-path from the clean-only network, z-path fresh with a noise-free prior
        manual_seed(opts.seed)
        y_net = _mlp(opts.hidden, 10)
        y_net.load_state_dict(clean_state)
        z_net = _mlp(64, 3)
        z_net[-1].bias.array[...] = numpy.log(numpy.array([0.6, 0.2, 0.2], numpy.float32))
        C0 = confusion_from_pairs(y_pool[clean_mask], noisy[clean_mask], 10, smoothing=1.0)
        model = NoisyLabelModel(y_net, z_net, 10, C0)
        known = numpy.where(clean_mask, y_pool, -1)
        targets = numpy.stack([noisy, known], 1)  # (observed noisy label, clean label or -1)

        def em_loss(out: Any, t: Any, model: Any = model) -> Any:
            y_logits, z_logits = out
            tt = t.numpy()
            with no_grad():
                py = F.softmax(y_logits, dim=1).numpy().astype(numpy.float64)
                pz = F.softmax(z_logits, dim=1).numpy().astype(numpy.float64)
            q = joint_posterior(py, pz, tt[:, 0], model.confusion, tt[:, 1])  # E-step
            dt = y_logits.dtype
            return (F.cross_entropy(y_logits, Tensor(q.sum(2).astype(dt)))
                    + F.cross_entropy(z_logits, Tensor(q.sum(1).astype(dt))))

        class ConfusionMStep(Callback):
            """After each epoch: E-step over the pool with the current paths, then C's M-step."""

            def __init__(self, model: Any, noisy: Any, known: Any) -> None:
                self.model, self.noisy, self.known = model, noisy, known

            def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
                model, noisy, known = self.model, self.noisy, self.known
                py, pz = [], []
                model.eval()
                with no_grad():
                    for k in range(0, pool, 1000):
                        yl, zl = model(Tensor(x_pool[k : k + 1000]))
                        py.append(F.softmax(yl, dim=1).numpy())
                        pz.append(F.softmax(zl, dim=1).numpy())
                model.train()
                q = joint_posterior(numpy.concatenate(py).astype(numpy.float64),
                                    numpy.concatenate(pz).astype(numpy.float64), noisy, model.confusion, known)
                model.confusion = update_confusion(q, noisy, smoothing=1e-3, zero_diagonal=True)
                flagged = q.sum(1)[:, 0] < 0.5  # posterior says: not noise-free
                wrong = noisy != y_pool
                self.detection = {
                    "noise_precision": float((flagged & wrong).sum() / max(flagged.sum(), 1)),
                    "noise_recall": float((flagged & wrong).sum() / max(wrong.sum(), 1)),
                }

        mstep = ConfusionMStep(model, noisy, known)
        info = fit(model, em_loss, x_pool, targets, f"noise-model-{setting}", [mstep])
        info.update(getattr(mstep, "detection", {}))
        C = model.confusion
        info["confusion_top"] = {int(c): int(C[c].argmax()) for c in range(10)}
        table["noise-model"][setting] = info
        table["clean-only"][setting] = results["clean-only"]
    results.update({f"{m}_{s}": table[m][s]["test_accuracy"] for m in table for s in settings})
    results["runs"] = table
    lines = [f"| method | {' | '.join(f'{s} {opts.rate:.0%}' for s in settings)} |",
             "|---|" + "---|" * len(settings)]
    for m in ("clean-only", "naive", "noise-model"):
        lines.append(f"| {m} | " + " | ".join(f"{table[m][s]['test_accuracy']:.4f}" for s in settings) + " |")
    md = "\n".join(lines)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(f"Test accuracy on Fashion-MNIST ({len(y_test)} test images)\n\n{md}\n")
    print(md, flush=True)
    results["data"] = fashion_mnist_record(opts.data)
    return results
