"""``handgrad run mlp-fashion``: a 784-256-128-10 ReLU MLP with dropout on Fashion-MNIST.

Same protocol as ``lenet-fashion`` (seeded 54,000 / 6,000 train/val split, Adam, early stopping on the
validation loss with the best weights restored, the official test set at the end).
"""

from __future__ import annotations

import argparse
from typing import Any

from handgrad.architectures import MLP
from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_splits, fit_classifier
from handgrad.optim import Adam


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 256,128, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got {text!r}")
    return sizes


def add_arguments(p: Any) -> None:
    p.add_argument("--hidden", type=_hidden, default=(256, 128), help="hidden layer sizes (default 256,128)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout after each hidden layer (default 0.2)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience in epochs (default 4)")
    p.add_argument("--val-size", type=int, default=None,
                   help="validation images held out of the train set (default 6000; 256 under --quick)")


def run(opts: Any) -> dict[str, Any]:
    if opts.patience < 0:
        raise ExperimentError(f"--patience must be >= 0, got {opts.patience}")
    if not 0 <= opts.dropout < 1:
        raise ExperimentError(f"--dropout must be in [0, 1), got {opts.dropout}")
    if opts.quick:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=opts.val_size, train_size=1024, test_size=512)
    else:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=opts.val_size)
    model = MLP(784, opts.hidden, 10, dropout=opts.dropout)
    optimizer = Adam(model.parameters(), lr=opts.lr)
    arch = "-".join(str(s) for s in (784, *opts.hidden, 10))
    results, _ = fit_classifier(opts, model, optimizer, splits, opts.patience, f"MLP {arch} / Fashion-MNIST")
    results["target_test_accuracy"] = 0.88
    return results
