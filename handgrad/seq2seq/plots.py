"""Attention heat maps: which source tokens the decoder looked at while emitting each output token.

    from handgrad.seq2seq.plots import plot_attention
    plot_attention(weights, source_tokens, output_tokens, "attention.png", title="de_CH -> ISO")

``weights`` (T, S) holds a_{t,s}, the attention of output step t on source position s (each row sums to 1
over the real source positions); rows are output tokens (the last one usually ``<eos>``), columns source
tokens (the last one usually ``<eos>``). Uses matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy


def _label(tok: str) -> str:
    return "␣" if tok == " " else tok  # a visible space for character-level tokens


def plot_attention(weights: Any, source_tokens: Sequence[str], output_tokens: Sequence[str],
                   path: str | os.PathLike[str] | None = None, title: str | None = None, ax: Any = None) -> Any:
    """Draw ``weights`` (T, S) as a heat map, source tokens along x and output tokens along y; return the
    figure (saved as PNG to ``path`` when given)."""
    w = numpy.asarray(weights, dtype=numpy.float64)
    if w.ndim != 2 or w.shape != (len(output_tokens), len(source_tokens)):
        raise ValueError(f"plot_attention: weights {w.shape} do not match {len(output_tokens)} output tokens x "
                         f"{len(source_tokens)} source tokens")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        T, S = w.shape
        fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * S + 2.0), max(3.0, 0.28 * T + 1.5)))
    else:
        fig = ax.figure
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(source_tokens)))
    ax.set_xticklabels([_label(t) for t in source_tokens], rotation=90 if max(map(len, source_tokens)) > 1 else 0,
                       fontsize=8)
    ax.set_yticks(range(len(output_tokens)))
    ax.set_yticklabels([_label(t) for t in output_tokens], fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        if path is not None:
            fig.savefig(os.fspath(path), dpi=110)
            plt.close(fig)
    return fig
