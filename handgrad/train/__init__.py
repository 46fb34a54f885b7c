"""``handgrad.train``: the training loop (``Trainer``), its callbacks, metrics, history and plots."""

from handgrad.train.callbacks import (
    Callback, EarlyStopping, LambdaCallback, LRSchedulerCallback, ModelCheckpoint,
)
from handgrad.train.history import History
from handgrad.train.metrics import Accuracy, MeanMetric, Metric, accuracy
from handgrad.train.trainer import Trainer

__all__ = [
    "Accuracy", "Callback", "EarlyStopping", "History", "LambdaCallback", "LRSchedulerCallback", "MeanMetric",
    "Metric", "ModelCheckpoint", "Trainer", "accuracy", "plot_history",
]


def plot_history(*args, **kwargs):  # lazy: matplotlib is imported only when a plot is drawn
    """See :func:`handgrad.train.plots.plot_history`."""
    from handgrad.train.plots import plot_history as _plot

    return _plot(*args, **kwargs)
