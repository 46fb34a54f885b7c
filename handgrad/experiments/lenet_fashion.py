"""``handgrad run lenet-fashion``: the benchmark LeNet on Fashion-MNIST (the project's main job).

54,000 training / 6,000 validation images (a seeded split of the official training set), Adam, early
stopping on the validation loss with the best weights restored, then the official 10,000-image test set.
Writes ``best``/``last`` checkpoints, ``history.csv``/``history.json``, ``learning_curves.png`` and
``results.json`` into the out dir. ``--quick``: 512 / 256 / 512 images and 2 epochs, a smoke test in seconds.
"""

from __future__ import annotations

from typing import Any

from handgrad.architectures import LeNet
from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_splits, fit_classifier
from handgrad.optim import Adam


def add_arguments(p: Any) -> None:
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    p.add_argument("--val-size", type=int, default=None,
                   help="validation images held out of the train set (default 6000; 256 under --quick)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout before the last layer (default 0)")


def run(opts: Any) -> dict[str, Any]:
    if opts.patience < 0:
        raise ExperimentError(f"--patience must be >= 0, got {opts.patience}")
    if not 0 <= opts.dropout < 1:
        raise ExperimentError(f"--dropout must be in [0, 1), got {opts.dropout}")
    if opts.quick:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=opts.val_size, train_size=512, test_size=512)
    else:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=opts.val_size)
    model = LeNet(dropout=opts.dropout)
    optimizer = Adam(model.parameters(), lr=opts.lr)
    results, _ = fit_classifier(opts, model, optimizer, splits, opts.patience, "LeNet / Fashion-MNIST")
    results["target_test_accuracy"] = 0.90
    return results
