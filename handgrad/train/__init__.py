"""``handgrad.train``: the one training loop (``Trainer``), the update steps it drives (``StandardUpdater``,
``BPTTUpdater`` + ``StreamLoader``; seq2seq and captioning steps live with their models), its callbacks,
metrics, history, checkpoints and plots. How a new chapter plugs in its own step: :mod:`handgrad.train.updaters`.
"""

from handgrad.serialization import CheckpointError
from handgrad.train.bptt import BPTTUpdater, StreamLoader, Window
from handgrad.train.callbacks import (
    Callback, EarlyStopping, LambdaCallback, LRSchedulerCallback, ModelCheckpoint,
)
from handgrad.train.history import History
from handgrad.train.metrics import Accuracy, MeanMetric, Metric, accuracy
from handgrad.train.trainer import Trainer
from handgrad.train.updaters import StandardUpdater, Updater

__all__ = [
    "Accuracy", "BPTTUpdater", "Callback", "CheckpointError", "EarlyStopping", "History", "LambdaCallback",
    "LRSchedulerCallback", "MeanMetric", "Metric", "ModelCheckpoint", "StandardUpdater", "StreamLoader", "Trainer",
    "Updater", "Window", "accuracy", "plot_history",
]


def plot_history(*args, **kwargs):  # lazy: matplotlib is imported only when a plot is drawn
    """See :func:`handgrad.train.plots.plot_history`."""
    from handgrad.train.plots import plot_history as _plot

    return _plot(*args, **kwargs)
