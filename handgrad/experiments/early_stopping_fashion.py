"""``handgrad run early-stopping-fashion``: early stopping stopping a real run that overfits.

The course's rule: stop at the point where the validation error stops decreasing. An over-parameterised
MLP (784-1024-1024-10, about 1.9M weights, no regularisation) is trained on only 1,000 Fashion-MNIST
images, so it memorises them within a few epochs while the validation loss (5,000 held-out images) turns
back up. ``EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)`` ends the run long
before ``--epochs`` (100) and puts back the weights of the best validation epoch. The run reports the test
accuracy both of those restored weights and of the weights at the stop (read from ``last.safetensors``),
and the learning-curve PNG marks the best and the stopping epochs.
"""

from __future__ import annotations

from typing import Any

from handgrad.architectures import MLP
from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_splits, fit_classifier, loaders
from handgrad.optim import Adam
from handgrad.serialization import load


def add_arguments(p: Any) -> None:
    p.add_argument("--train-size", type=int, default=1000, help="training images (default 1000: overfits fast)")
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience in epochs (default 10; 5 with --quick)")
    p.add_argument("--width", type=int, default=1024, help="units in each of the two hidden layers (default 1024)")


def run(opts: Any) -> dict[str, Any]:
    if opts.patience < 0 or opts.train_size < 1 or opts.width < 1:
        raise ExperimentError("--patience must be >= 0, --train-size and --width >= 1")
    if opts.quick:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=500, train_size=200, test_size=1000)
        width = min(opts.width, 256)
    else:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=5000, train_size=opts.train_size)
        width = opts.width
    model = MLP(784, (width, width), 10)
    optimizer = Adam(model.parameters(), lr=opts.lr)
    results, trainer = fit_classifier(opts, model, optimizer, splits, opts.patience,
                                      f"early stopping: MLP 784-{width}-{width}-10 on {len(splits.y_train)} images")
    # the weights at the moment training stopped (before the best ones were restored) are in last.safetensors
    restored = model.state_dict()
    model.load_state_dict(load(f"{opts.out}/last.safetensors")["model"])
    *_, test_loader = loaders(splits, opts.batch_size, opts.seed)
    at_stop = trainer.evaluate(test_loader)
    model.load_state_dict(restored)
    history = trainer.history
    results["test_accuracy_at_stop"] = at_stop["accuracy"]
    results["test_loss_at_stop"] = at_stop["loss"]
    results["val_loss_at_best"] = history["val_loss"][results["best_epoch"] - 1] if results["best_epoch"] else None
    results["val_loss_at_stop"] = history["val_loss"][-1]
    results["train_accuracy_at_stop"] = history["accuracy"][-1]
    results["stopped_before_max_epochs"] = results["epochs_run"] < opts.epochs
    print(
        f"best epoch {results['best_epoch']}: val_loss {results['val_loss_at_best']:.4f}, test accuracy "
        f"{results['test_accuracy']:.4f} (restored)  |  stop at epoch {results['epochs_run']}: val_loss "
        f"{results['val_loss_at_stop']:.4f}, train accuracy {results['train_accuracy_at_stop']:.4f}, test accuracy "
        f"{at_stop['accuracy']:.4f}"
    )
    return results
