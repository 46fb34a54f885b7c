"""Learning curves: train/val loss and accuracy against epoch, with the early-stopping point marked.

    from handgrad.train.plots import plot_history
    plot_history(history, "runs/x/learning_curves.png")

Uses matplotlib's non-interactive Agg backend (no display needed), so it works on servers and in CI.
"""

from __future__ import annotations

import os
from typing import Any

from handgrad.train.history import History


def plot_history(
    history: History | dict[str, Any] | str,
    path: str | os.PathLike[str] | None = None,
    metrics: tuple[str, ...] | None = None,
    best_epoch: int | None = None,
    stopped_epoch: int | None = None,
    title: str | None = None,
) -> Any:
    """Draw one panel per quantity (``loss`` and each metric such as ``accuracy``), train and ``val_``
    curves together, and return the matplotlib ``Figure`` (saved to ``path`` as PNG when given).

    ``best_epoch`` (default: ``history.meta["early_stopping"]["best_epoch"]``, the epoch whose weights
    early stopping keeps) is marked by a dashed vertical line and a dot on the validation curves;
    ``stopped_epoch`` (default: where early stopping stopped) by a dotted line. ``history`` may be a
    ``History``, its ``state_dict()`` or the path of a ``history.json``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if isinstance(history, (str, os.PathLike)):
        history = History.from_json(os.fspath(history))
    elif isinstance(history, dict):
        h = History()
        h.load_state_dict(history)
        history = h
    if not len(history):
        raise ValueError("plot_history: the history is empty (no epoch finished)")
    es = history.meta.get("early_stopping", {})
    if best_epoch is None and es.get("best_epoch"):
        best_epoch = int(es["best_epoch"])
    if stopped_epoch is None and es.get("stopped_epoch"):
        stopped_epoch = int(es["stopped_epoch"])
    cols = history.columns
    if metrics is None:
        skip = {"epoch", "lr", "time"}
        metrics = tuple(c for c in cols if c not in skip and not c.startswith("val_"))
        if not metrics:  # only validation columns
            metrics = tuple(c[4:] for c in cols if c.startswith("val_"))
    epochs = history.epochs
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        for key, label, style in ((name, "train", "-o"), (f"val_{name}", "validation", "-s")):
            if key in history:
                ys = [float("nan") if v is None else v for v in history[key]]
                ax.plot(epochs, ys, style, markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1,
                       label=f"best (epoch {best_epoch})")
            vk = f"val_{name}" if f"val_{name}" in history else name
            if best_epoch in epochs and vk in history:
                v = history[vk][epochs.index(best_epoch)]
                if v is not None:
                    ax.plot([best_epoch], [v], "o", color="tab:green", markersize=7)
        if stopped_epoch is not None:
            ax.axvline(stopped_epoch, color="tab:red", linestyle=":", linewidth=1,
                       label=f"stopped (epoch {stopped_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        parent = os.path.dirname(os.fspath(path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(os.fspath(path), dpi=110)
        plt.close(fig)
    return fig
