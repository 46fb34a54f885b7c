"""``handgrad run mdlstm-fashion``: Fashion-MNIST classified by a two-dimensional LSTM.

The 28x28 image is cut into non-overlapping p x p patches (default 4: a 7x7 grid of 16-pixel vectors); a
2-D LSTM layer scans the grid from its four corners (Graves et al. 2007), so that every position's
hidden vector summarises the whole image seen from one corner; the four maps are concatenated, flattened
and classified by a linear layer. Training protocol of the other Fashion-MNIST runs: seeded train/val
split, Adam, early stopping on the validation loss with the best weights restored, the official test set.
"""

from __future__ import annotations

from typing import Any

from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_splits, fit_classifier
from handgrad.nn import Linear, Module
from handgrad.optim import Adam
from handgrad.recurrent.mdlstm import MDLSTM2d


class MDLSTMClassifier(Module):
    """(B, 1, 28, 28) images -> patches -> 4-direction 2-D LSTM -> tanh -> linear -> 10 logits."""

    def __init__(self, patch: int = 4, hidden: int = 16, classes: int = 10, size: int = 28) -> None:
        super().__init__()
        if size % patch:
            raise ValueError(f"MDLSTMClassifier: patch {patch} does not divide the image size {size}")
        self.patch, self.grid = patch, size // patch
        self.mdlstm = MDLSTM2d(patch * patch, hidden, directions=4)
        self.head = Linear(self.grid * self.grid * 4 * hidden, classes)

    def forward(self, x: Any) -> Any:
        B, p, g = x.shape[0], self.patch, self.grid
        patches = x.reshape(B, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(B, g, g, p * p)
        h = self.mdlstm(patches).tanh()
        return self.head(h.reshape(B, -1))


def add_arguments(p: Any) -> None:
    p.add_argument("--patch", type=int, default=4, help="patch side in pixels (default 4: a 7x7 grid)")
    p.add_argument("--hidden", type=int, default=16, help="hidden units per direction (default 16)")
    p.add_argument("--train-size", type=int, default=None, help="training images (default: all 54,000)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")


def run(opts: Any) -> dict[str, Any]:
    if opts.patch < 1 or 28 % opts.patch:
        raise ExperimentError(f"--patch must divide 28, got {opts.patch}")
    if opts.quick:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=256, train_size=1024, test_size=512)
    else:
        splits = fashion_mnist_splits(opts.data, opts.seed, val_size=6000, train_size=opts.train_size)
    model = MDLSTMClassifier(opts.patch, opts.hidden)
    optimizer = Adam(model.parameters(), lr=opts.lr)
    grid = 28 // opts.patch
    title = f"2-D LSTM on a {grid}x{grid} grid of {opts.patch}x{opts.patch} patches / Fashion-MNIST"
    results, _ = fit_classifier(opts, model, optimizer, splits, opts.patience, title)
    return results
