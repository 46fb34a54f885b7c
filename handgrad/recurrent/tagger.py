"""Sequence tagging (paired sequences, one label per step) with a (bi)directional recurrent network, and the
word-boundary task it is used for: text with the spaces removed, predict where each word starts.

Model (:class:`SequenceTagger`)::

    e_t = Embedding(x_t)                                           x (B, T) ids  ->  e (B, T, E)
    h_t = [h_t^fwd ; h_t^bwd]  (stacked (bi)LSTM/GRU)              h (B, T, D H),  D = 2 if bidirectional else 1
    u_t = ReLU(W_1 h_t + b_1)  (optional head layer)               u (B, T, M)
    z_t = W_o u_t + b_o        (u_t = h_t without the head)        logits z (B, T, K)
    p(y_t = k | x) = softmax(z_t)_k

A unidirectional tagger sees x_1..x_t when labelling x_t; a bidirectional one sees the whole sequence:
h_t^fwd summarises the left context, h_t^bwd (the same recurrence run from x_T back to x_t) the right one.
The loss is the mean cross-entropy over the steps whose label is not ``ignore_index`` (padding), as
``F.cross_entropy`` with ``ignore_index=-100``.

Word boundaries: ``"To be, or"`` becomes the characters ``"Tobe,or"`` with tags ``1 0 1 0 0 1 0`` (1 where
a word starts, i.e. at the first character and after any white space in the original). Scores are per
character: precision/recall/F1 of the boundary class and accuracy over all characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy

from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.functional.classification_losses import sequence_cross_entropy
from handgrad.nn import GRU, LSTM, Dropout, Embedding, Linear, Module
from handgrad.train.metrics import Metric

IGNORE_INDEX = -100


class SequenceTagger(Module):
    """Embedding -> (bi)LSTM/GRU -> [Linear-ReLU head] -> Linear: one tag distribution per input step.

    Args:
        vocab_size: input symbols (id 0 is padding: its embedding stays zero).
        num_tags: K, the number of labels.
        embedding_size, hidden_size (per direction), num_layers, bidirectional, cell (``"lstm"``/``"gru"``).
        dropout: on the embeddings, between recurrent layers and before each output layer.
        head_size: units of an optional hidden layer between the RNN and the output (0: none).

    ``forward(ids (B, T) int64, lengths=None)`` -> logits (B, T, K); with ``lengths`` (B,) the steps past a
    sequence's length are padding (the backward direction starts at each sequence's last real step).
    """

    def __init__(
        self, vocab_size: int, num_tags: int, embedding_size: int = 32, hidden_size: int = 64, num_layers: int = 1,
        bidirectional: bool = True, cell: str = "lstm", dropout: float = 0.0, head_size: int = 0,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"SequenceTagger: cell must be 'lstm' or 'gru', got {cell!r}")
        for key, v in (("vocab_size", vocab_size), ("num_tags", num_tags)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SequenceTagger: {key} must be a positive integer, got {v!r}")
        if num_tags < 2:
            raise ValueError(f"SequenceTagger: num_tags must be >= 2 (a softmax over one tag is constant), got "
                             f"{num_tags}")
        if head_size < 0:
            raise ValueError(f"SequenceTagger: head_size must be >= 0, got {head_size}")
        self.config = dict(vocab_size=vocab_size, num_tags=num_tags, embedding_size=embedding_size,
                           hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, cell=cell,
                           dropout=dropout, head_size=head_size)
        self.vocab_size, self.num_tags = vocab_size, num_tags
        self.embedding = Embedding(vocab_size, embedding_size, padding_idx=0)
        RNN = LSTM if cell == "lstm" else GRU
        self.rnn = RNN(embedding_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
                       bidirectional=bidirectional)
        self.dropout = Dropout(dropout)
        width = hidden_size * (2 if bidirectional else 1)
        self.head = Linear(width, head_size) if head_size else None
        self.output = Linear(head_size or width, num_tags)

    def forward(self, ids: Any, lengths: Any = None) -> Tensor:
        x = ids if isinstance(ids, Tensor) else Tensor(numpy.asarray(ids))
        if x.ndim != 2 or x.dtype.kind not in "iu":
            raise ValueError(f"SequenceTagger: expected integer ids (B, T), got shape {x.shape} dtype {x.dtype}")
        h, _ = self.rnn(self.dropout(self.embedding(x)), lengths=lengths)
        h = self.dropout(h)
        if self.head is not None:
            h = self.dropout(self.head(h).relu())
        return self.output(h)


def tagging_loss(logits: Tensor, tags: Any, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the steps whose tag is not ``ignore_index``: logits (B, T, K), tags (B, T)."""
    return sequence_cross_entropy(logits, tags, ignore_index, op="tagging_loss")


@no_grad()
def predict_tags(model: Module, ids: Any, lengths: Any = None) -> numpy.ndarray:
    """argmax tags (B, T) of ``model(ids, lengths)`` in eval mode (the model's mode is put back)."""
    was = model.training
    model.eval()
    try:
        logits = model(ids if isinstance(ids, Tensor) else Tensor(numpy.asarray(ids, numpy.int64)), lengths)
    finally:
        model.train(was)
    return numpy.asarray(logits.array).argmax(axis=-1)


# -- word boundaries ----------------------------------------------------------------------------------------
def boundary_labels(text: str) -> tuple[str, numpy.ndarray]:
    """``text`` -> (its characters with all white space removed, tags (N,) int64): 1 where a word starts
    (the first character, and every character that followed white space in ``text``), else 0."""
    if not text:
        return "", numpy.zeros(0, numpy.int64)
    # vectorised over code points (a Python loop takes seconds on a 5-million-character corpus)
    codes = numpy.frombuffer(text.encode("utf-32-le"), dtype=numpy.uint32)
    spaces = [ord(c) for c in set(text) if c.isspace()]
    ws = numpy.isin(codes, numpy.asarray(spaces, numpy.uint32))
    after_space = numpy.concatenate([[True], ws[:-1]])  # the first character starts a word too
    keep = ~ws
    chars = codes[keep].tobytes().decode("utf-32-le")
    return chars, after_space[keep].astype(numpy.int64)


def segment(chars: str, tags: Sequence[int] | numpy.ndarray) -> str:
    """Put a space before every character tagged 1 (except the first): the inverse of :func:`boundary_labels`
    up to the kind of white space."""
    if len(chars) != len(tags):
        raise ValueError(f"segment: {len(chars)} characters but {len(tags)} tags")
    return "".join((" " + c if (t and i) else c) for i, (c, t) in enumerate(zip(chars, tags)))


def boundary_scores(pred: Any, tags: Any, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """Per-character scores of predicted boundary tags: precision, recall and F1 of the boundary class (1)
    and accuracy over all characters (positions tagged ``ignore_index`` are skipped)."""
    p, t = numpy.asarray(pred).reshape(-1), numpy.asarray(tags).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"boundary_scores: {p.shape[0]} predictions for {t.shape[0]} tags")
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    tp = int(((p == 1) & (t == 1)).sum())
    fp = int(((p == 1) & (t != 1)).sum())
    fn = int(((p != 1) & (t == 1)).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "accuracy": float((p == t).mean()) if len(t) else 0.0}


class BoundaryF1(Metric):
    """Trainer metric ``f1``: F1 of tag 1 over an epoch, from logits (B, T, K) and tags (B, T)."""

    name = "f1"

    def reset(self) -> None:
        self.tp = self.fp = self.fn = 0

    def update(self, output: Any, target: Any) -> None:
        p = numpy.asarray(output.array if isinstance(output, Tensor) else output).argmax(axis=-1)
        t = numpy.asarray(target.array if isinstance(target, Tensor) else target)
        keep = t != IGNORE_INDEX
        self.tp += int(((p == 1) & (t == 1) & keep).sum())
        self.fp += int(((p == 1) & (t != 1) & keep).sum())
        self.fn += int(((p != 1) & (t == 1) & keep).sum())

    def compute(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0


class CharTable:
    """Characters <-> ids with ``0`` = padding and ``1`` = any character not seen when the table was built."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.itos = ["<pad>", "<unk>", *sorted(set(chars))]
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> numpy.ndarray:
        return numpy.fromiter((self.stoi.get(c, 1) for c in text), numpy.int64, len(text))


class WindowLoader:
    """Batches of windows of a long tagged sequence: ``(ids (B, L) Tensor, tags (B, L) array)``, or
    ``((ids, lengths (B,)), tags)`` when ``shuffle=False`` (the last window is padded with id 0 and tag
    ``IGNORE_INDEX``; the Trainer passes the tuple to ``model(ids, lengths)``).

    ``shuffle=True``: each epoch draws ``batches`` batches of windows starting at random positions (with
    ``self.generator``, seeded and saved in Trainer checkpoints); ``shuffle=False``: the sequence cut into
    consecutive windows in order, every character exactly once."""

    def __init__(self, ids: numpy.ndarray, tags: numpy.ndarray, window: int, batch_size: int,
                 shuffle: bool = True, batches: int | None = None, seed: int = 0) -> None:
        if len(ids) != len(tags):
            raise ValueError(f"WindowLoader: {len(ids)} ids but {len(tags)} tags")
        if window < 1 or batch_size < 1 or len(ids) < window:
            raise ValueError(f"WindowLoader: need window >= 1 (got {window}), batch_size >= 1 (got {batch_size}) "
                             f"and at least one window of characters (got {len(ids)})")
        self.ids, self.tags = numpy.asarray(ids, numpy.int64), numpy.asarray(tags, numpy.int64)
        self.window, self.batch_size, self.shuffle = int(window), int(batch_size), shuffle
        n_windows = -(-len(ids) // window)
        self.batches = int(batches) if batches else -(-n_windows // batch_size)
        self.generator = numpy.random.default_rng(seed)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Any:
        L = self.window
        if self.shuffle:
            for _ in range(self.batches):
                starts = self.generator.integers(0, len(self.ids) - L + 1, self.batch_size)
                idx = starts[:, None] + numpy.arange(L)
                yield Tensor(self.ids[idx]), self.tags[idx]
            return
        n = len(self.ids)
        pad = -n % L
        ids = numpy.concatenate([self.ids, numpy.zeros(pad, numpy.int64)]).reshape(-1, L)
        tags = numpy.concatenate([self.tags, numpy.full(pad, IGNORE_INDEX, numpy.int64)]).reshape(-1, L)
        lengths = numpy.full(len(ids), L, numpy.int64)
        lengths[-1] = L - pad  # the backward direction of the last window starts at its last real character
        for i in range(0, len(ids), self.batch_size):
            j = slice(i, i + self.batch_size)
            yield (Tensor(ids[j]), lengths[j]), tags[j]
