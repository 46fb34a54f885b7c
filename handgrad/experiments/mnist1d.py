"""``handgrad run mnist1d``: many-to-one sequence classification of MNIST-1D with a GRU.

MNIST-1D (Greydanus 2020) is made here by the ``mnist1d`` package's offline generator
(``make_dataset(get_dataset_args())``, never the downloading ``get_dataset``): 10 one-dimensional digit
templates, padded, translated, scaled, sheared and noised into 40-step signals. The paper's split is 4,000
training / 1,000 test sequences (seed 42), on which its GRU reaches about 91% test accuracy.

The model reads the 40 values one per step (input size 1) and classifies from the last hidden state only
(many-to-one): ``logits = W h_40 + b``. ``--extra-samples N`` adds N more training sequences drawn from the
same generator with a different seed (``seed 42 + 1``), so the test set stays the paper's 1,000; a tenth of
the paper's 4,000 training sequences is held out for validation / early stopping.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy

import handgrad as hg
import handgrad.functional as F
from handgrad import nn, optim
from handgrad.data import DataLoader, TensorDataset
from handgrad.data.sequences import load_mnist1d
from handgrad.train import EarlyStopping, Trainer
from handgrad.train.plots import plot_history


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, default=128, help="GRU hidden units (default 128)")
    p.add_argument("--layers", type=int, default=1, help="stacked GRU layers (default 1)")
    p.add_argument("--mode", default="GRU", choices=("GRU", "LSTM", "RNN"), help="recurrent cell (default GRU)")
    p.add_argument("--extra-samples", type=int, default=0,
                   help="extra generated training sequences (same generator, seed 43; default 0)")
    p.add_argument("--patience", type=int, default=15, help="early-stopping patience in epochs (default 15)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (default 1.0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")


def build_classifier(mode: str, hidden: int, layers: int, n_classes: int = 10) -> Any:
    """``(B, T, 1) -> (B, n_classes)``: a recurrent stack read at its last step, then a linear layer.

    (Defined inside a function so that ``handgrad list``, which imports every experiment, stays light.)
    """

    class RecurrentClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cls = {"GRU": nn.GRU, "LSTM": nn.LSTM, "RNN": nn.RNN}[mode]
            self.rnn = cls(1, hidden, layers, batch_first=True)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, x: Any) -> Any:
            _, state = self.rnn(x)
            h_n = state[0] if isinstance(state, tuple) else state
            return self.head(h_n[-1])  # many-to-one: only the final state of the top layer

    return RecurrentClassifier()


def run(opts: argparse.Namespace) -> dict[str, Any]:
    # the paper's data: 4,000 train / 1,000 test, seed 42 (--quick: a 600-sequence draw, for smoke tests)
    base = load_mnist1d(num_samples=600) if opts.quick else load_mnist1d()
    x_tr, y_tr = base.sequences("train")
    x_te, y_te = base.sequences("test")
    if opts.quick:
        opts.hidden, opts.epochs, opts.extra_samples = min(opts.hidden, 16), min(opts.epochs, 2), 0
    rng = numpy.random.default_rng(opts.seed)
    perm = rng.permutation(len(y_tr))
    n_val = len(y_tr) // 10
    x_val, y_val = x_tr[perm[:n_val]], y_tr[perm[:n_val]]
    x_fit, y_fit = x_tr[perm[n_val:]], y_tr[perm[n_val:]]
    if opts.extra_samples > 0:
        # same generator, another seed; N + its test share, so that N go to training
        extra = load_mnist1d(num_samples=int(opts.extra_samples / 0.8) + 10, seed=43)
        xe, ye = extra.sequences("train")
        x_fit, y_fit = numpy.concatenate([x_fit, xe[: opts.extra_samples]]), numpy.concatenate(
            [y_fit, ye[: opts.extra_samples]]
        )
    model = build_classifier(opts.mode, opts.hidden, opts.layers)
    n_params = sum(p.numel() for p in model.parameters())
    opt = (optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay) if opts.weight_decay
           else optim.Adam(model.parameters(), lr=opts.lr))
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=max(opts.patience // 3, 1))
    trainer = Trainer(
        model, opt, F.cross_entropy, metrics=("accuracy",),
        callbacks=[EarlyStopping("val_accuracy", patience=opts.patience, restore_best_weights=True)],
        scheduler=sched, out_dir=opts.out, grad_clip=opts.clip, progress=opts.progress,
    )
    train_loader = DataLoader(TensorDataset(x_fit, y_fit), batch_size=opts.batch_size, shuffle=True, seed=opts.seed)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=500)
    test_loader = DataLoader(TensorDataset(x_te, y_te), batch_size=500)
    print(f"MNIST-1D: {len(y_fit)} train / {len(y_val)} val / {len(y_te)} test sequences of 40 steps; "
          f"{opts.mode} {opts.layers}x{opts.hidden} ({n_params:,} parameters)")
    history = trainer.fit(train_loader, val_loader, epochs=opts.epochs)
    test = trainer.evaluate(test_loader)
    plot_history(history, os.path.join(opts.out, "learning_curves.png"), title="MNIST-1D, GRU many-to-one")
    hg.save(model.state_dict(), os.path.join(opts.out, "model.safetensors"))
    es = history.meta.get("early_stopping", {})
    print(f"test accuracy {test['accuracy']:.4f} (best epoch {es.get('best_epoch')})")
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_epoch": es.get("best_epoch"),
        "best_val_accuracy": es.get("best"),
        "epochs_run": len(history),
        "n_train": int(len(y_fit)),
        "n_val": int(len(y_val)),
        "n_test": int(len(y_te)),
        "parameters": n_params,
        "paper_gru_accuracy": 0.91,
    }
