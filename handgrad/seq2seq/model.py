"""Encoder-decoder (Sutskever et al. 2014) with optional attention, for translation-like tasks.

    encoder:  (bi)LSTM or GRU over the embedded source; outputs K (B, S, E) and final states
    bridge:   decoder initial state s_0 = tanh(W_b [h_fwd; h_bwd]) per layer (and c_0 likewise for an LSTM)
    decoder:  s_t = RNN(s_{t-1}, emb(y_{t-1}))        (output feedback: y_{t-1} is the previous symbol)
    attention (optional): c_t, a_t = attn(s_t, K, mask);  o_t = tanh(W_c [s_t; c_t])   (Luong et al. 2015,
              with the additive score of Bahdanau et al. or the multiplicative one)
    output:   p(y_t | y_<t, x) = softmax(W_o o_t)      (o_t = s_t without attention)

Training: ``forward(src, src_lengths, tgt_in, teacher_forcing=1.0)``. With teacher forcing (eps = 1) the
ground-truth previous symbols are known in advance, so the decoder runs as ONE fused recurrent op over all
steps and attention scores all steps at once. With eps < 1 (scheduled sampling, Bengio et al. 2015; 0 is
free running) the decoder runs step by step and feeds, per token, the ground truth with probability eps,
else a symbol sampled from its own prediction.

Inference: ``decoder_step_fn(src, src_lengths)`` returns the ``step`` and ``state`` that the decoders in
:mod:`handgrad.seq2seq.decoding` (greedy, sampling, beam search) drive.
"""

from __future__ import annotations

from typing import Any

import numpy

from handgrad.engine.backend import to_host
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.ops.shape import permute
from handgrad.engine.random import get_rng
from handgrad.engine.tensor import Tensor
from handgrad.nn import GRU, LSTM, Dropout, Embedding, Linear, Module
from handgrad.seq2seq.attention import AdditiveAttention, MultiplicativeAttention
from handgrad.seq2seq.scheduled_sampling import mix_tokens
from handgrad.seq2seq.vocab import Vocab

ATTENTIONS = ("additive", "general", "dot", None)


def _cat(tensors: list[Tensor], dim: int) -> Tensor:
    import handgrad as hg

    return hg.cat(tensors, dim=dim)


class Seq2Seq(Module):
    """Embedding -> (bi)RNN encoder -> bridge -> RNN decoder [-> attention] -> linear -> logits."""

    def __init__(
        self, src_vocab_size: int, tgt_vocab_size: int, embedding_size: int = 64, hidden_size: int = 128,
        num_layers: int = 1, bidirectional: bool = True, attention: str | None = "additive", cell: str = "lstm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"Seq2Seq: attention must be one of {ATTENTIONS}, got {attention!r}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"Seq2Seq: cell must be 'lstm' or 'gru', got {cell!r}")
        self.config = dict(
            src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embedding_size=embedding_size,
            hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, attention=attention,
            cell=cell, dropout=dropout,
        )
        if attention == "dot" and bidirectional:
            raise ValueError("Seq2Seq: 'dot' attention compares decoder and encoder states directly, so it needs "
                             "bidirectional=False (or use 'general')")
        RNN = LSTM if cell == "lstm" else GRU
        self.is_lstm = cell == "lstm"
        self.num_layers, self.hidden_size, self.attention_kind = num_layers, hidden_size, attention
        dirs = 2 if bidirectional else 1
        self.dirs = dirs
        enc_size = hidden_size * dirs
        self.src_embedding = Embedding(src_vocab_size, embedding_size, padding_idx=Vocab.pad_id)
        self.tgt_embedding = Embedding(tgt_vocab_size, embedding_size, padding_idx=Vocab.pad_id)
        self.encoder = RNN(embedding_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
                           bidirectional=bidirectional)
        self.bridge_h = Linear(enc_size, hidden_size)
        if self.is_lstm:
            self.bridge_c = Linear(enc_size, hidden_size)
        self.decoder = RNN(embedding_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.dropout = Dropout(dropout)
        if attention == "additive":
            self.attention = AdditiveAttention(hidden_size, enc_size, hidden_size)
        elif attention is not None:
            self.attention = MultiplicativeAttention(hidden_size, enc_size, kind=attention)
        if attention is not None:
            self.combine = Linear(hidden_size + enc_size, hidden_size)
        self.output = Linear(hidden_size, tgt_vocab_size)

    # -- encoder ------------------------------------------------------------------------------------------
    def _bridge(self, final: Tensor, layer: Linear) -> Tensor:
        """(L * dirs, B, H) final encoder states -> (L, B, H) decoder initial states."""
        L, B, H = self.num_layers, final.shape[1], self.hidden_size
        f = final.reshape(L, self.dirs, B, H)
        f = permute(f, 0, 2, 1, 3).reshape(L, B, self.dirs * H)
        return layer(f).tanh()

    def encode(self, src: Tensor, src_lengths: Any) -> tuple[Tensor, numpy.ndarray, Any]:
        """Source ids (B, S) -> encoder outputs (B, S, E), padding mask (B, S), decoder initial state."""
        if src.ndim != 2:
            raise ValueError(f"Seq2Seq.encode: source ids must be (B, S), got shape {src.shape}")
        lengths = numpy.asarray(src_lengths.array if isinstance(src_lengths, Tensor) else src_lengths)
        emb = self.dropout(self.src_embedding(src))
        out, final = self.encoder(emb, lengths=lengths)
        mask = numpy.arange(src.shape[1])[None, :] < lengths[:, None]
        if self.is_lstm:
            state: Any = (self._bridge(final[0], self.bridge_h), self._bridge(final[1], self.bridge_c))
        else:
            state = self._bridge(final, self.bridge_h)
        return out, mask, state

    # -- decoder ------------------------------------------------------------------------------------------
    def _readout(self, s: Tensor, keys: Tensor, mask: Any, pk: Any) -> tuple[Tensor, Tensor | None]:
        s = self.dropout(s)
        if self.attention_kind is None:
            return self.output(s), None
        c, a = self.attention(s, keys, mask, projected_keys=pk)
        o = self.combine(_cat([s, c], dim=-1)).tanh()
        return self.output(self.dropout(o)), a

    def forward(
        self, src: Tensor, src_lengths: Any, tgt_in: Tensor, teacher_forcing: float = 1.0
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) for the target positions, and attention weights (B, T, S) if any.

        ``tgt_in`` (B, T) starts with ``<bos>``: the decoder input at step t is the symbol t-1 of the target.
        """
        keys, mask, state = self.encode(src, src_lengths)
        pk = self.attention.precompute(keys) if self.attention_kind is not None else None
        if teacher_forcing >= 1.0:
            s, _ = self.decoder(self.dropout(self.tgt_embedding(tgt_in)), state)
            return self._readout(s, keys, mask, pk)
        logits, weights = [], []
        dev = tgt_in.device
        gold = to_host(tgt_in.array)  # token mixing and sampling are host work
        tokens = sampled = gold[:, 0]
        T = tgt_in.shape[1]
        rng = get_rng()
        for t in range(T):
            if t > 0:
                tokens = mix_tokens(gold[:, t], sampled, teacher_forcing)
            emb = self.dropout(self.tgt_embedding(Tensor(dev.send(tokens[:, None]))))
            s, state = self.decoder(emb, state)
            lg, a = self._readout(s, keys, mask, pk)
            logits.append(lg)
            weights.append(a)
            with no_grad():  # the model's own sample: p(y_t | y_<t) drawn by inverse CDF
                z = to_host(lg.array[:, 0, :]).astype(numpy.float64)
                p = numpy.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                u = rng.random((p.shape[0], 1))
                sampled = numpy.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
        att = _cat(weights, dim=1) if weights[0] is not None else None
        return _cat(logits, dim=1), att

    # -- inference ----------------------------------------------------------------------------------------
    def decoder_step_fn(self, src: Tensor, src_lengths: Any) -> tuple[Any, dict[str, Any], Any]:
        """``(step, state, select)`` for :mod:`handgrad.seq2seq.decoding`; call under ``no_grad``."""
        keys, mask, state = self.encode(src, src_lengths)
        pk = self.attention.precompute(keys) if self.attention_kind is not None else None
        st = {"rnn": state, "keys": keys, "mask": mask, "pk": pk, "attn": []}
        dev = keys.device
        xp = dev.xp

        # decoding is host work: tokens come from the host and log-probabilities go back there explicitly
        def step(tokens: numpy.ndarray, st: dict[str, Any]) -> tuple[numpy.ndarray, dict[str, Any]]:
            emb = self.tgt_embedding(Tensor(dev.send(numpy.asarray(tokens, numpy.int64)[:, None])))
            s, rnn = self.decoder(emb, st["rnn"])
            lg, a = self._readout(s, st["keys"], st["mask"], st["pk"])
            z = to_host(lg.array[:, 0, :]).astype(numpy.float64)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - numpy.log(numpy.exp(z).sum(axis=1, keepdims=True))
            attn = st["attn"] + ([to_host(a.array[:, 0, :])] if a is not None else [])
            return logp, {**st, "rnn": rnn, "attn": attn}

        def select(st: dict[str, Any], idx: numpy.ndarray) -> dict[str, Any]:
            def rows(t: Any, axis: int) -> Any:
                if t is None:
                    return None
                if isinstance(t, Tensor):
                    return Tensor(xp.take(t.array, xp.asarray(idx), axis=axis))
                return numpy.take(t, idx, axis=axis)  # the host mask

            rnn = st["rnn"]
            rnn = tuple(rows(x, 1) for x in rnn) if isinstance(rnn, tuple) else rows(rnn, 1)
            return {"rnn": rnn, "keys": rows(st["keys"], 0), "mask": rows(st["mask"], 0),
                    "pk": rows(st["pk"], 0), "attn": [a[idx] for a in st["attn"]]}

        return step, st, select
