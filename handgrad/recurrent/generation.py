"""Sampling text from a recurrent language model: temperature, top-k, and generation from an initial state.

A language model here is any module called as ``logits, state = model(idx, state)`` with ``idx (B, T)``
int64 token ids and ``logits (B, T, V)`` (``RNNLanguageModel`` is one). Generation is the one-to-many
topology: the state after reading a prefix (or any initial state, e.g. one made from a class) is unrolled
by feeding each sampled token back in.

Sampling the next token from logits ``z (V,)``::

    p_i = softmax(z / tau)_i            temperature tau > 0: tau -> 0 is greedy (argmax), tau = 1 the model,
                                         tau > 1 flatter (more surprising text)
    top-k: keep the k largest z_i, renormalise over them (the long tail of unlikely characters is cut)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy

from handgrad import nn
from handgrad.engine.backend import module_device
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn.module import Module
from handgrad.recurrent.regularization import RegularizedRNN, embedding_dropout


class CharVocab:
    """Characters <-> ids: the sorted set of characters of a text (``itos``, ``stoi``)."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.itos: list[str] = sorted(set(chars))
        if not self.itos:
            raise ValueError("CharVocab: the text has no characters")
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> numpy.ndarray:
        """``text`` as an int64 array of ids; a character not in the vocabulary is an error naming it."""
        try:
            return numpy.fromiter((self.stoi[c] for c in text), numpy.int64, len(text))
        except KeyError as e:
            raise KeyError(f"CharVocab.encode: character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def to_json(self) -> dict[str, Any]:
        return {"itos": self.itos}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CharVocab:
        return cls(d["itos"])


def sample_logits(
    logits: Any, temperature: float = 1.0, top_k: int | None = None, generator: numpy.random.Generator | None = None
) -> numpy.ndarray:
    """Draw one id per row of ``logits (B, V)`` (or ``(V,)``) from ``softmax(logits / temperature)``.

    ``temperature = 0`` is greedy (argmax). ``top_k`` keeps only the ``k`` largest logits of each row.
    Returns int64 ids of shape ``(B,)`` (or a 0-d array for a 1-D input).
    """
    z = numpy.asarray(logits.numpy() if isinstance(logits, Tensor) else logits, numpy.float64)
    if z.ndim not in (1, 2):
        raise ValueError(f"sample_logits: logits must be (V,) or (B, V), got shape {z.shape}")
    if temperature < 0:
        raise ValueError(f"sample_logits: temperature must be >= 0, got {temperature}")
    squeeze = z.ndim == 1
    z = z[None] if squeeze else z
    v = z.shape[1]
    if top_k is not None and not 1 <= top_k:
        raise ValueError(f"sample_logits: top_k must be >= 1, got {top_k}")
    if temperature == 0:
        ids = z.argmax(axis=1)
    else:
        z = z / temperature
        if top_k is not None and top_k < v:
            kth = numpy.partition(z, v - top_k, axis=1)[:, v - top_k : v - top_k + 1]
            z = numpy.where(z >= kth, z, -numpy.inf)  # ties at the k-th value are all kept
        z = z - z.max(axis=1, keepdims=True)
        p = numpy.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = generator if generator is not None else get_rng()
        u = g.random((z.shape[0], 1))
        ids = (p.cumsum(axis=1) < u).sum(axis=1)  # inverse-CDF draw, one uniform per row
        ids = numpy.minimum(ids, v - 1)
    ids = ids.astype(numpy.int64)
    return ids[0] if squeeze else ids


def sample(
    model: Module,
    prefix: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: CharVocab | None = None,
    state: Any = None,
    generator: numpy.random.Generator | None = None,
) -> str:
    """Generate ``length`` characters after ``prefix`` (returned without the prefix).

    The model reads ``prefix`` (from ``state`` if given, else its zero state), then samples a character,
    feeds it back, and so on (``sample_logits`` does each draw). With an empty prefix the first
    character comes from ``model.state_logits(state)``: generation from an initial state alone.
    ``vocab`` defaults to ``model.vocab``. The model is put in eval mode for the duration.
    """
    if length < 0:
        raise ValueError(f"sample: length must be >= 0, got {length}")
    vocab = vocab if vocab is not None else getattr(model, "vocab", None)
    if vocab is None:
        raise ValueError("sample: pass vocab= (the model has no .vocab)")
    was_training = model.training
    model.eval()
    dev = module_device(model)  # ids are made on the host and sent where the model is
    out: list[int] = []
    try:
        with no_grad():
            if prefix:
                ids = vocab.encode(prefix)
                logits, state = model(Tensor(dev.send(ids[None])), state)
                last = logits.numpy()[:, -1]
            else:
                if not hasattr(model, "state_logits"):
                    raise ValueError("sample: an empty prefix needs model.state_logits(state) for the first step")
                last = model.state_logits(state).numpy()
            for _ in range(length):
                nxt = sample_logits(last, temperature, top_k, generator)  # (1,)
                out.append(int(nxt[0]))
                logits, state = model(Tensor(dev.send(nxt[:, None])), state)
                last = logits.numpy()[:, -1]
    finally:
        model.train(was_training)
    return vocab.decode(out)


class RNNLanguageModel(Module):
    """Embedding -> stacked LSTM/GRU/RNN -> Linear: ``logits, state = model(idx (B, T), state)``.

    ``logits (B, T, V)`` score the next token at every position; ``state`` is the recurrent state to carry
    to the next chunk (truncated BPTT detaches it) or to feed back during generation. Regularisation
    (Zaremba placement, optionally variational): ``dropout`` on the embeddings, between layers and before
    the classifier, ``embedding_dropout`` on whole word vectors, ``variational`` for masks shared over time.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        mode: str = "LSTM",
        dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        variational: bool = False,
        vocab: CharVocab | None = None,
    ) -> None:
        super().__init__()
        if vocab is not None and len(vocab) != vocab_size:
            raise ValueError(f"RNNLanguageModel: vocab has {len(vocab)} entries but vocab_size={vocab_size}")
        self.vocab = vocab
        self.mode, self.vocab_size = mode, vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.embedding_dropout = embedding_dropout
        self.rnn = RegularizedRNN(
            mode, embedding_dim, hidden_size, num_layers, dropout=dropout, dropout_in=dropout,
            dropout_out=dropout, variational=variational, batch_first=True,
        )
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        if idx.ndim != 2:
            raise ValueError(f"RNNLanguageModel: idx must be (batch, seq_len) token ids, got shape {idx.shape}")
        if self.embedding_dropout and self.training:
            x = embedding_dropout(idx, self.embedding.weight, self.embedding_dropout, True)
        else:
            x = self.embedding(idx)
        out, state = self.rnn(x, state)
        return self.decoder(out), state

    def state_logits(self, state: Any) -> Tensor:
        """Next-token logits ``(B, V)`` read from a state alone (the top layer's ``h``): the first step of
        generation from an initial state."""
        h = state[0] if self.mode == "LSTM" else state
        return self.decoder(h[-1])

