"""Image captioning: a CNN encoder and an RNN decoder (Vinyals et al. 2015 "Show and Tell"), optionally with
soft attention over the CNN's feature map (Xu et al. 2015 "Show, Attend and Tell").

    encoder:  F = CNN(x)                        x (B, 3, H, W)  ->  F (B, C, H', W'),  H' = H / 2^k
              keys K = the H'W' grid vectors     K (B, S, C),  S = H' W'  (row-major over the grid)
              image vector v = mean_s K_s        v (B, C)      (global average pooling, ``image_vector="mean"``)
                        or v = [K_1; ..; K_S]    v (B, S C)    (the whole grid, ``image_vector="flatten"``: keeps
                                                               where things are, for a fixed image size)
    bridge:   s_0 = tanh(W_h v + b_h)  (and c_0 = tanh(W_c v + b_c) for an LSTM), one (B, H) per layer:
              the decoder's initial state is the image (Show and Tell feeds the image once, at the start)
    decoder:  s_t = RNN(s_{t-1}, emb(y_{t-1}))   (output feedback: y_{t-1} is the previous word)
    attention (optional): c_t, a_t = attn(s_t, K);  o_t = tanh(W_c [s_t; c_t])   a_t (B, S) over the grid
    output:   p(y_t | y_<t, x) = softmax(W_o o_t)   (o_t = s_t without attention)

Where the context enters. Xu et al. feed c_t into the LSTM's input at step t (so s_t depends on c_{t-1}); here
c_t is computed from s_t and combined after the recurrence (Luong et al. 2015's placement, as in
:class:`~handgrad.seq2seq.model.Seq2Seq`). The attention is still soft attention over the H'xW' grid,
but the recurrence never depends on it, so with teacher forcing (the previous ground-truth words known in
advance) the whole decoder is ONE fused recurrent op over all steps and the attention scores all steps at
once. Step-by-step decoding (greedy, beam search) goes through :meth:`Captioner.decoder_step_fn`.

Training data: a caption "hamster face" becomes ``tgt_in = <bos> hamster face`` and
``tgt_out = hamster face <eos>``; batches pad both with ``<pad>`` (= 0), which the loss ignores
(:func:`handgrad.seq2seq.training.sequence_cross_entropy`). :class:`CaptionLoader` optionally augments
the images of every training batch (small shifts, brightness/contrast jitter: no flips or hue changes,
since captions name directions and colours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy

from handgrad.engine.backend import get_array_module, to_host
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.ops.shape import permute
from handgrad.engine.tensor import Tensor
from handgrad.nn import GRU, LSTM, BatchNorm2d, Conv2d, Dropout, Embedding, Linear, MaxPool2d, Module, ReLU, Sequential
from handgrad.seq2seq.attention import AdditiveAttention, MultiplicativeAttention
from handgrad.seq2seq.decoding import beam_search, greedy_decode
from handgrad.seq2seq.training import TokenAccuracy, sequence_cross_entropy
from handgrad.seq2seq.vocab import Vocab
from handgrad.train.callbacks import Callback
from handgrad.train.trainer import Trainer
from handgrad.train.updaters import Updater

PAD, BOS, EOS, UNK = Vocab.pad_id, Vocab.bos_id, Vocab.eos_id, Vocab.unk_id
ATTENTIONS = ("additive", "general", None)


def _cat(tensors: list[Tensor], dim: int) -> Tensor:
    import handgrad as hg

    return hg.cat(tensors, dim=dim)


# -- the model ----------------------------------------------------------------------------------------------
class CNNEncoder(Module):
    """``k = len(channels)`` blocks ``conv 3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU -> MaxPool2d(2)``:
    images (B, in_channels, H, W) -> feature map (B, channels[-1], H // 2^k, W // 2^k)."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if not channels or any(int(c) < 1 for c in channels):
            raise ValueError(f"CNNEncoder: channels must be a non-empty list of positive ints, got {channels!r}")
        layers: list[Module] = []
        c = in_channels
        for out in channels:
            # no conv bias: the BatchNorm that follows subtracts the channel mean, which would cancel it
            layers += [Conv2d(c, int(out), 3, padding=1, bias=False), BatchNorm2d(int(out)), ReLU(), MaxPool2d(2)]
            c = int(out)
        self.body = Sequential(*layers)
        self.in_channels, self.out_channels, self.downsample = in_channels, c, 2 ** len(channels)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)


class Captioner(Module):
    """CNN encoder -> image vector -> RNN decoder's initial state [-> soft attention over the grid] -> logits.

    Args:
        vocab_size: words, the four specials of :class:`~handgrad.seq2seq.vocab.Vocab` included.
        embedding_size, hidden_size, num_layers, cell (``"lstm"`` or ``"gru"``): the decoder.
        channels: the CNN's blocks (each halves the resolution); the attention grid is (H/2^k) x (W/2^k).
        attention: ``None`` (Show and Tell), ``"additive"`` (Bahdanau score, as Xu et al.) or ``"general"``.
        dropout: on the image vector, the word embeddings and before the output layer(s).
        image_vector: ``"mean"`` (global average pooling: any image size) or ``"flatten"`` (the grid's vectors
            concatenated: spatial layout kept; needs ``image_size``, the side of the square input images).

    ``forward(images (B, C_in, H, W), tgt_in (B, T))`` -> ``(logits (B, T, V), attention (B, T, S) or None)``,
    teacher-forced; :meth:`decoder_step_fn` drives :mod:`handgrad.seq2seq.decoding`.
    """

    def __init__(
        self, vocab_size: int, embedding_size: int = 64, hidden_size: int = 128,
        channels: Sequence[int] = (32, 64, 128), num_layers: int = 1, attention: str | None = None,
        cell: str = "lstm", dropout: float = 0.0, in_channels: int = 3, image_vector: str = "mean",
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"Captioner: attention must be one of {ATTENTIONS}, got {attention!r}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"Captioner: cell must be 'lstm' or 'gru', got {cell!r}")
        if image_vector not in ("mean", "flatten"):
            raise ValueError(f"Captioner: image_vector must be 'mean' or 'flatten', got {image_vector!r}")
        if image_vector == "flatten" and (image_size is None or image_size < 2 ** len(channels)):
            raise ValueError(f"Captioner: image_vector='flatten' needs image_size >= {2 ** len(channels)} (the side "
                             f"of the square images), got {image_size!r}")
        if vocab_size <= UNK + 1:  # ids 0-3 are <pad> <bos> <eos> <unk>
            raise ValueError(f"Captioner: vocab_size {vocab_size} leaves no word besides the 4 specials")
        self.config = dict(vocab_size=vocab_size, embedding_size=embedding_size, hidden_size=hidden_size,
                           channels=list(channels), num_layers=num_layers, attention=attention, cell=cell,
                           dropout=dropout, in_channels=in_channels, image_vector=image_vector,
                           image_size=image_size)
        self.is_lstm = cell == "lstm"
        self.num_layers, self.hidden_size, self.attention_kind = num_layers, hidden_size, attention
        self.encoder = CNNEncoder(in_channels, channels)
        C = self.encoder.out_channels
        self.image_vector, self.image_size = image_vector, image_size
        # the pooled grid side: each block's MaxPool2d(2) floors
        self.grid = None
        if image_vector == "flatten":
            g = image_size
            for _ in channels:
                g //= 2
            self.grid = g
        V_in = C if image_vector == "mean" else C * self.grid * self.grid
        self.init_h = Linear(V_in, num_layers * hidden_size)
        if self.is_lstm:
            self.init_c = Linear(V_in, num_layers * hidden_size)
        self.embedding = Embedding(vocab_size, embedding_size, padding_idx=PAD)
        RNN = LSTM if self.is_lstm else GRU
        self.decoder = RNN(embedding_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.dropout = Dropout(dropout)
        if attention == "additive":
            self.attention = AdditiveAttention(hidden_size, C, hidden_size)
        elif attention == "general":
            self.attention = MultiplicativeAttention(hidden_size, C, kind="general", scaled=True)
        if attention is not None:
            self.combine = Linear(hidden_size + C, hidden_size)
        self.output = Linear(hidden_size, vocab_size)

    # -- encoder ------------------------------------------------------------------------------------------
    def _check_images(self, images: Any) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"Captioner: images must be a Tensor, got {type(images).__name__}")
        c, m = self.encoder.in_channels, self.encoder.downsample
        if images.ndim != 4 or images.shape[1] != c or images.shape[2] < m or images.shape[3] < m:
            raise ValueError(
                f"Captioner: expected images (B, {c}, H, W) with H, W >= {m} (the encoder halves them "
                f"{int(math.log2(m))} times), got shape {images.shape}"
            )
        return images

    def _initial(self, v: Tensor, layer: Linear) -> Tensor:
        """Image vectors (B, C) -> one initial state per decoder layer, (L, B, H)."""
        B = v.shape[0]
        s = layer(v).tanh().reshape(B, self.num_layers, self.hidden_size)
        return permute(s, 1, 0, 2)

    def encode(self, images: Tensor) -> tuple[Tensor, Any]:
        """Images (B, C_in, H, W) -> keys (B, S, C) (the feature grid, row-major) and the decoder's initial
        state ((h_0, c_0) for an LSTM, each (L, B, H); h_0 for a GRU)."""
        f = self.encoder(self._check_images(images))
        B, C, h, w = f.shape
        keys = permute(f.reshape(B, C, h * w), 0, 2, 1)
        if self.image_vector == "mean":
            v = self.dropout(keys.mean(dim=1))
        else:
            if (h, w) != (self.grid, self.grid):
                raise ValueError(f"Captioner: image_vector='flatten' was built for {self.image_size}x{self.image_size} "
                                 f"images (a {self.grid}x{self.grid} grid), got images {images.shape}")
            v = self.dropout(keys.reshape(B, h * w * C))
        if self.is_lstm:
            return keys, (self._initial(v, self.init_h), self._initial(v, self.init_c))
        return keys, self._initial(v, self.init_h)

    # -- decoder ------------------------------------------------------------------------------------------
    def _readout(self, s: Tensor, keys: Tensor, pk: Any) -> tuple[Tensor, Tensor | None]:
        s = self.dropout(s)
        if self.attention_kind is None:
            return self.output(s), None
        c, a = self.attention(s, keys, None, projected_keys=pk)
        o = self.combine(_cat([s, c], dim=-1)).tanh()
        return self.output(self.dropout(o)), a

    def forward(self, images: Tensor, tgt_in: Any) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, S) (None without attention).

        ``tgt_in`` (B, T) word ids starting with ``<bos>``: the decoder input at step t is word t-1.
        """
        t = tgt_in if isinstance(tgt_in, Tensor) else Tensor(numpy.asarray(tgt_in, numpy.int64))
        if t.ndim != 2 or t.shape[0] != images.shape[0]:
            raise ValueError(f"Captioner: expected images (B, C, H, W) and captions (B, T) with the same B, got "
                             f"{images.shape} and {t.shape}")
        keys, state = self.encode(images)
        pk = self.attention.precompute(keys) if self.attention_kind is not None else None
        s, _ = self.decoder(self.dropout(self.embedding(t)), state)
        return self._readout(s, keys, pk)

    # -- inference ----------------------------------------------------------------------------------------
    def decoder_step_fn(self, images: Tensor) -> tuple[Any, dict[str, Any], Any]:
        """``(step, state, select)`` for :mod:`handgrad.seq2seq.decoding`; call under ``no_grad`` in eval mode.

        ``step(tokens (N,), state) -> (log p(y_t | y_<t, x) (N, V), state)``; the state keeps the attention
        weights of every step in ``state["attn"]`` (a list of (N, S) arrays)."""
        keys, rnn = self.encode(images)
        pk = self.attention.precompute(keys) if self.attention_kind is not None else None
        st = {"rnn": rnn, "keys": keys, "pk": pk, "attn": []}
        dev = keys.device
        xp = dev.xp

        # decoding is host work: tokens come from the host and log-probabilities go back there explicitly
        def step(tokens: numpy.ndarray, st: dict[str, Any]) -> tuple[numpy.ndarray, dict[str, Any]]:
            emb = self.embedding(Tensor(dev.send(numpy.asarray(tokens, numpy.int64)[:, None])))
            s, rnn = self.decoder(emb, st["rnn"])
            lg, a = self._readout(s, st["keys"], st["pk"])
            z = to_host(lg.array[:, 0, :]).astype(numpy.float64)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - numpy.log(numpy.exp(z).sum(axis=1, keepdims=True))
            attn = st["attn"] + ([to_host(a.array[:, 0, :])] if a is not None else [])
            return logp, {**st, "rnn": rnn, "attn": attn}

        def select(st: dict[str, Any], idx: numpy.ndarray) -> dict[str, Any]:
            def rows(t: Any, axis: int) -> Any:
                return None if t is None else Tensor(xp.take(t.array, xp.asarray(idx), axis=axis))

            r = st["rnn"]
            r = tuple(rows(x, 1) for x in r) if isinstance(r, tuple) else rows(r, 1)
            return {"rnn": r, "keys": rows(st["keys"], 0), "pk": rows(st["pk"], 0),
                    "attn": [a[idx] for a in st["attn"]]}

        return step, st, select


# -- data ---------------------------------------------------------------------------------------------------
def encode_caption(caption: str, vocab: Vocab) -> list[int]:
    """Word ids of a caption split on white space (words unknown to ``vocab`` -> ``<unk>``), no specials.

    Captions are split on white space, not with the vocabulary's tokenizer, so that a decoded caption
    (words joined by single spaces) compares with the original text as it is ("right-pointing" stays one word).
    """
    return [vocab.stoi.get(w, UNK) for w in caption.split()]


def decode_caption(ids: Sequence[int], vocab: Vocab) -> str:
    """The caption text of ``ids``: words joined by spaces, stopping at ``<eos>``, specials dropped."""
    words = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i in (PAD, BOS):
            continue
        words.append(vocab.itos[i] if 0 <= i < len(vocab.itos) else "<unk>")
    return " ".join(words)


def build_caption_vocab(captions: Sequence[str], min_freq: int = 1) -> Vocab:
    """A word vocabulary of white-space-separated caption words seen at least ``min_freq`` times (most
    frequent first, ties alphabetical), after the four specials."""
    from collections import Counter

    counts = Counter(w for c in captions for w in c.split())
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
    return Vocab(words, level="word", lowercase=False)


def images_to_float(images: numpy.ndarray, dtype: Any = numpy.float32) -> numpy.ndarray:
    """uint8 images (N, H, W, 3) -> floats in [0, 1], channels first (N, 3, H, W)."""
    x = numpy.asarray(images)
    if x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"images_to_float: expected images (N, H, W, 3), got shape {x.shape}")
    return numpy.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=dtype) / dtype(255.0)


def augment_images(x: numpy.ndarray, rng: numpy.random.Generator, max_shift: int = 2, jitter: float = 0.2,
                   fill: float = 1.0) -> numpy.ndarray:
    """Random label-preserving changes of a batch (B, C, H, W) of [0, 1] images, each image drawn anew:

    * a shift by (dy, dx) ~ U{-max_shift..max_shift}^2 pixels, the uncovered border filled with ``fill``
      (1 = the white canvas of the emoji);
    * brightness b ~ U(1 - jitter, 1 + jitter) and contrast k ~ U(1 - jitter, 1 + jitter):
      x' = clip(mean + k (b x - mean), 0, 1) with the image's mean intensity (hue is kept: captions say colours).
    """
    B, C, H, W = x.shape
    out = numpy.full_like(x, fill)
    if max_shift > 0:
        shifts = rng.integers(-max_shift, max_shift + 1, size=(B, 2))
        for i, (dy, dx) in enumerate(shifts):
            ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
            xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
            out[i, :, yd, xd] = x[i, :, ys, xs]
    else:
        out[...] = x
    if jitter > 0:
        b = rng.uniform(1 - jitter, 1 + jitter, (B, 1, 1, 1)).astype(x.dtype)
        k = rng.uniform(1 - jitter, 1 + jitter, (B, 1, 1, 1)).astype(x.dtype)
        bx = out * b
        mean = bx.mean(axis=(1, 2, 3), keepdims=True)
        out = numpy.clip(mean + k * (bx - mean), 0.0, 1.0).astype(x.dtype)
    return out


class CaptionBatch(NamedTuple):
    """``images`` (B, C, H, W) float, ``tgt_in`` = ``<bos> w_1 .. w_T`` and ``tgt_out`` = ``w_1 .. w_T <eos>``
    (B, T+1) int64, padded with ``<pad>``."""

    images: numpy.ndarray
    tgt_in: numpy.ndarray
    tgt_out: numpy.ndarray


def make_caption_batch(images: numpy.ndarray, captions: Sequence[Sequence[int]],
                       ignore_unknown: bool = False) -> CaptionBatch:
    """Pad caption id lists (no specials) into decoder inputs/targets next to their images.

    ``ignore_unknown``: ``<unk>`` TARGETS become ``<pad>`` (left out of the loss; the decoder still reads
    ``<unk>`` as its input). For held-out captions: a word outside the vocabulary cannot be predicted, and its
    -log p(<unk>) grows as the model gets confident, so it would dominate a validation loss."""
    if len(images) != len(captions):
        raise ValueError(f"make_caption_batch: {len(images)} images but {len(captions)} captions")
    B = len(captions)
    T = max(len(c) for c in captions) + 1
    tgt_in = numpy.full((B, T), PAD, numpy.int64)
    tgt_out = numpy.full((B, T), PAD, numpy.int64)
    for b, c in enumerate(captions):
        tgt_in[b, 0] = BOS
        tgt_in[b, 1 : len(c) + 1] = c
        tgt_out[b, : len(c)] = c
        tgt_out[b, len(c)] = EOS
    if ignore_unknown:
        tgt_out[tgt_out == UNK] = PAD
    return CaptionBatch(numpy.asarray(images), tgt_in, tgt_out)


class CaptionLoader:
    """Batches of (image, caption) pairs; shuffled each epoch with ``self.generator`` (seeded, saved in
    Trainer checkpoints) when ``shuffle``; ``augment`` (kwargs of :func:`augment_images`, or None) changes
    every training image anew each time it is drawn; ``ignore_unknown`` as in :func:`make_caption_batch`."""

    def __init__(self, images: numpy.ndarray, captions: Sequence[Sequence[int]], batch_size: int,
                 shuffle: bool = True, seed: int = 0, augment: dict[str, Any] | None = None,
                 ignore_unknown: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"CaptionLoader: batch_size must be >= 1, got {batch_size}")
        if len(images) != len(captions) or len(images) == 0:
            raise ValueError(f"CaptionLoader: need as many images as captions (> 0), got {len(images)} and "
                             f"{len(captions)}")
        self.images, self.captions = images, [list(c) for c in captions]
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.ignore_unknown = ignore_unknown
        self.generator = numpy.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.captions) / self.batch_size)

    def __iter__(self) -> Any:
        n = len(self.captions)
        order = self.generator.permutation(n) if self.shuffle else numpy.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            x = self.images[idx]
            if self.augment is not None:
                x = augment_images(x, self.generator, **self.augment)
            yield make_caption_batch(x, [self.captions[j] for j in idx], self.ignore_unknown)


# -- training -----------------------------------------------------------------------------------------------
class CaptionUpdater(Updater):
    """One training step of a :class:`Captioner` on a :class:`CaptionBatch`: teacher forcing (the decoder reads
    ``tgt_in``), the padded mean cross-entropy (:func:`~handgrad.seq2seq.training.sequence_cross_entropy`)
    against ``tgt_out``. Images are cast to the model's dtype."""

    def send(self, batch: Any) -> Any:
        sent = super().send(batch)  # the targets stay on the host, where the loss and the metric read them
        return sent._replace(tgt_out=batch.tgt_out) if sent is not batch and isinstance(batch, CaptionBatch) else sent

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        if not isinstance(batch, CaptionBatch):
            raise TypeError(f"CaptionUpdater: expected a CaptionBatch, got {type(batch).__name__}")
        dt = next(iter(self.model.parameters())).dtype
        images = get_array_module(batch.images).asarray(batch.images, dtype=dt)  # on the batch's device
        output = self.model(Tensor(images), Tensor(batch.tgt_in))
        return sequence_cross_entropy(output[0], batch.tgt_out), output, batch.tgt_out


class CaptionTrainer(Trainer):
    """A :class:`~handgrad.train.Trainer` with a :class:`CaptionUpdater` and teacher-forced token accuracy as
    the metric (unless given); other arguments as ``Trainer``."""

    def __init__(self, model: Any, optimizer: Any, metrics: Any = None, grad_clip: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(updater=CaptionUpdater(model, optimizer, grad_clip),
                         metrics=[TokenAccuracy()] if metrics is None else metrics, **kwargs)


def decode_captions(model: Captioner, images: numpy.ndarray, max_len: int, beam_size: int = 1,
                    length_penalty: float = 0.0, batch_size: int = 128) -> list[list[int]]:
    """Caption ids (without ``<eos>``) of float images (N, C, H, W): greedy (``beam_size=1``) or beam search;
    in eval mode under no_grad (the model's mode is put back)."""
    if beam_size < 1:
        raise ValueError(f"decode_captions: beam_size must be >= 1, got {beam_size}")
    was_training = getattr(model, "training", False)
    model.eval()
    dt = next(iter(model.parameters())).dtype
    out: list[list[int]] = []
    try:
        with no_grad():
            bs = max(1, batch_size // beam_size)
            for i in range(0, len(images), bs):
                x = Tensor(numpy.asarray(images[i : i + bs], dt))
                step, state, select = model.decoder_step_fn(x)
                if beam_size == 1:
                    out += greedy_decode(step, state, len(x.array), BOS, EOS, max_len)
                else:
                    hyps = beam_search(step, state, len(x.array), BOS, EOS, max_len, beam_size=beam_size,
                                       length_penalty=length_penalty, select=select)
                    out += [h[0].tokens for h in hyps]
    finally:
        model.train(was_training)
    return out


def caption_attention(model: Captioner, image: numpy.ndarray, output: Sequence[int]) -> numpy.ndarray:
    """Attention (T + 1, S) that the model paid to the grid of ``image`` (C, H, W) while emitting ``output``
    and then ``<eos>`` (teacher-forced with its own output, i.e. exactly the weights of its greedy decoding)."""
    if model.attention_kind is None:
        raise ValueError("caption_attention: the model has no attention")
    was_training = model.training
    model.eval()
    dt = next(iter(model.parameters())).dtype
    try:
        with no_grad():
            _, a = model(Tensor(numpy.asarray(image, dt)[None]), Tensor(numpy.asarray([[BOS, *output]], numpy.int64)))
    finally:
        model.train(was_training)
    return numpy.asarray(a.array[0], numpy.float64)


def caption_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu's, in [0, 100]), exact-match rate and unigram recall/precision of caption texts."""
    from collections import Counter

    from handgrad.metrics import corpus_bleu

    if len(hyps) != len(refs):
        raise ValueError(f"caption_scores: {len(hyps)} hypotheses for {len(refs)} references")
    hit = n_hyp = n_ref = 0
    for h, r in zip(hyps, refs):
        ch, cr = Counter(h.split()), Counter(r.split())
        hit += sum((ch & cr).values())
        n_hyp += sum(ch.values())
        n_ref += sum(cr.values())
    return {
        "bleu": corpus_bleu(list(hyps), list(refs)),
        "exact_match": sum(h == r for h, r in zip(hyps, refs)) / max(len(refs), 1),
        "word_precision": hit / n_hyp if n_hyp else 0.0,
        "word_recall": hit / n_ref if n_ref else 0.0,
    }


class CaptionValidation(Callback):
    """After every epoch, caption the validation images greedily and add ``val_bleu`` and
    ``val_exact_match`` to the epoch logs (before EarlyStopping / ModelCheckpoint read them)."""

    order = -10

    def __init__(self, images: numpy.ndarray, references: Sequence[str], vocab: Vocab, max_len: int,
                 prefix: str = "val_") -> None:
        self.images, self.references, self.vocab = images, list(references), vocab
        self.max_len, self.prefix = max_len, prefix

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        pred = decode_captions(self.trainer.model, self.images, self.max_len)
        s = caption_scores([decode_caption(p, self.vocab) for p in pred], self.references)
        logs[self.prefix + "bleu"] = s["bleu"]
        logs[self.prefix + "exact_match"] = s["exact_match"]
