"""Training and evaluating a :class:`~handgrad.seq2seq.model.Seq2Seq` translator.

Data layout. A pair (source text, target text) becomes ids with the two vocabularies:

    src     = x_1 .. x_S <eos>            (the encoder input; <eos> marks the end, and guarantees S >= 1)
    tgt_in  = <bos> y_1 .. y_T            (the decoder inputs: the previous symbol at every step)
    tgt_out = y_1 .. y_T <eos>            (what the decoder must predict at every step)

A batch pads each of the three to its longest member with ``<pad>`` (= 0) and carries the true source
lengths, so the encoder skips the padding and attention never looks at it. The loss is the mean
cross-entropy over the target positions that are not padding (``ignore_index=<pad>``):

    L = - (1 / #{(b, t): y_bt != pad}) sum_{b, t: y_bt != pad} log p(y_bt | y_b,<t, x_b)

so padding never changes the loss or its gradient.

Speed. Batches are bucketed by length (:class:`BucketBatchLoader`): the shuffled pairs are cut into pools of
``pool`` batches, each pool is sorted by length and cut into batches, and the batches are shuffled, so a
batch holds sentences of similar length (little padding) while every epoch still sees a new order.

Teacher forcing and scheduled sampling. :class:`Seq2SeqUpdater` (the step the Trainer drives) takes
``teacher_forcing``, a probability eps or a :class:`~handgrad.seq2seq.scheduled_sampling.TeacherForcingSchedule`
stepped once per training batch (Bengio et al. 2015): eps = 1 is teacher forcing (the fused decoder),
eps = 0 free running, and in between every decoder input token is the ground truth with probability eps,
else the model's own sample.
Validation loss is always teacher-forced (eps = 1); :class:`DecodeValidation` adds free-running (greedy)
exact match, token accuracy and BLEU on a validation set to the epoch logs, so EarlyStopping and
ModelCheckpoint can monitor ``val_exact_match`` or ``val_bleu``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy

from handgrad.engine.backend import module_device, to_host
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.functional.classification_losses import sequence_cross_entropy as _sequence_cross_entropy
from handgrad.seq2seq.decoding import beam_search, greedy_decode
from handgrad.seq2seq.scheduled_sampling import TeacherForcingSchedule
from handgrad.seq2seq.vocab import Vocab
from handgrad.train.callbacks import Callback
from handgrad.train.metrics import Metric
from handgrad.train.trainer import Trainer
from handgrad.train.updaters import Updater

PAD, BOS, EOS = Vocab.pad_id, Vocab.bos_id, Vocab.eos_id

Pair = tuple[list[int], list[int]]  # (source ids ending in <eos>, target ids without specials)


class Batch(NamedTuple):
    """One padded batch: ``src`` (B, S), ``src_lengths`` (B,), ``tgt_in`` (B, T), ``tgt_out`` (B, T), int64."""

    src: numpy.ndarray
    src_lengths: numpy.ndarray
    tgt_in: numpy.ndarray
    tgt_out: numpy.ndarray


# -- data ---------------------------------------------------------------------------------------------------
def encode_source(text: str, vocab: Vocab) -> list[int]:
    """Source ids ``x_1 .. x_S <eos>`` (unknown tokens -> ``<unk>``)."""
    return vocab.encode(text, add_bos=False, add_eos=True)


def encode_pairs(sources: Sequence[str], targets: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab) -> list[Pair]:
    """``[(source ids with <eos>, target ids without specials), ...]``."""
    if len(sources) != len(targets):
        raise ValueError(f"encode_pairs: {len(sources)} sources but {len(targets)} targets")
    return [(encode_source(s, src_vocab), tgt_vocab.encode(t, add_eos=False)) for s, t in zip(sources, targets)]


def make_batch(pairs: Sequence[Pair]) -> Batch:
    """Pad a list of pairs into a :class:`Batch` (``tgt_in`` gets ``<bos>`` in front, ``tgt_out`` ``<eos>`` at
    the end)."""
    if not pairs:
        raise ValueError("make_batch: no pairs")
    B = len(pairs)
    lengths = numpy.array([len(s) for s, _ in pairs], numpy.int64)
    if lengths.min() < 1:
        raise ValueError("make_batch: a source sequence is empty (encode sources with encode_source)")
    T = max(len(t) for _, t in pairs) + 1
    src = numpy.full((B, int(lengths.max())), PAD, numpy.int64)
    tgt_in = numpy.full((B, T), PAD, numpy.int64)
    tgt_out = numpy.full((B, T), PAD, numpy.int64)
    for b, (s, t) in enumerate(pairs):
        src[b, : len(s)] = s
        tgt_in[b, 0] = BOS
        tgt_in[b, 1 : len(t) + 1] = t
        tgt_out[b, : len(t)] = t
        tgt_out[b, len(t)] = EOS
    return Batch(src, lengths, tgt_in, tgt_out)


class BucketBatchLoader:
    """Batches of similar-length pairs.

    ``shuffle=True``: each epoch permutes the pairs, cuts them into pools of ``pool * batch_size``, sorts
    every pool by (source length, target length), cuts it into batches and shuffles the batch order.
    ``shuffle=False``: all pairs sorted by length once (fastest for evaluation; order is deterministic).
    The shuffling generator is ``self.generator`` (seeded), which the Trainer saves in its checkpoints.
    """

    def __init__(self, pairs: Sequence[Pair], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"BucketBatchLoader: batch_size must be >= 1, got {batch_size}")
        if not pairs:
            raise ValueError("BucketBatchLoader: no pairs")
        self.pairs = list(pairs)
        self.batch_size, self.shuffle, self.pool = int(batch_size), shuffle, max(1, int(pool))
        self.generator = numpy.random.default_rng(seed)
        self._keys = numpy.array([len(s) * 10000 + len(t) for s, t in self.pairs])

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def batch_indices(self) -> list[numpy.ndarray]:
        n, bs = len(self.pairs), self.batch_size
        if not self.shuffle:
            order = numpy.argsort(self._keys, kind="stable")
            return [order[i : i + bs] for i in range(0, n, bs)]
        perm = self.generator.permutation(n)
        batches = []
        step = bs * self.pool
        for i in range(0, n, step):
            chunk = perm[i : i + step]
            chunk = chunk[numpy.argsort(self._keys[chunk], kind="stable")]
            batches += [chunk[j : j + bs] for j in range(0, len(chunk), bs)]
        return [batches[i] for i in self.generator.permutation(len(batches))]

    def __iter__(self) -> Any:
        for idx in self.batch_indices():
            yield make_batch([self.pairs[i] for i in idx])


# -- loss and metrics ---------------------------------------------------------------------------------------
def sequence_cross_entropy(logits: Tensor, tgt_out: Any) -> Tensor:
    """Mean cross-entropy over the non-padding target positions: logits (B, T, V), tgt_out (B, T) ids, i.e.
    ``F.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=<pad>)`` (shapes and ids checked
    under this name). All targets padding gives ``nan``, as in PyTorch."""
    return _sequence_cross_entropy(logits, tgt_out, PAD, op="sequence_cross_entropy")


class TokenAccuracy(Metric):
    """Fraction of non-padding target positions whose argmax prediction is right (given the decoder's
    inputs of that batch: teacher-forced in validation)."""

    name = "token_accuracy"

    def reset(self) -> None:
        self.right = self.total = 0

    def update(self, output: Any, target: Any) -> None:
        logits = output[0] if isinstance(output, tuple) else output
        pred = to_host(logits.array if isinstance(logits, Tensor) else logits).argmax(axis=-1)
        t = to_host(target)
        mask = t != PAD
        self.right += int(((pred == t) & mask).sum())
        self.total += int(mask.sum())

    def compute(self) -> float:
        return self.right / self.total if self.total else 0.0


# -- the update step and the trainer --------------------------------------------------------------------------
class Seq2SeqUpdater(Updater):
    """One training step of a ``Seq2Seq`` on a :class:`Batch`: the decoder reads ``tgt_in`` with teacher-forcing
    probability eps, the loss is :func:`sequence_cross_entropy` against ``tgt_out``.

    ``teacher_forcing``: a probability eps in [0, 1] (1: teacher forcing, 0: free running) or a
    ``TeacherForcingSchedule`` evaluated at ``iteration``, the number of training batches seen so far (saved
    in :meth:`state_dict`, so a resumed run continues the schedule). In eval mode (validation) eps = 1.
    """

    def __init__(self, model: Any, optimizer: Any, teacher_forcing: float | TeacherForcingSchedule = 1.0,
                 grad_clip: float | None = None) -> None:
        if not isinstance(teacher_forcing, TeacherForcingSchedule):
            eps = float(teacher_forcing)
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"Seq2SeqUpdater: teacher_forcing must be in [0, 1] or a TeacherForcingSchedule, "
                                 f"got {teacher_forcing!r}")
        super().__init__(model, optimizer, grad_clip)
        self.teacher_forcing = teacher_forcing
        self.last_teacher_forcing = self.teacher_forcing_at(0)

    def teacher_forcing_at(self, step: int) -> float:
        tf = self.teacher_forcing
        return float(tf(step)) if isinstance(tf, TeacherForcingSchedule) else float(tf)

    def send(self, batch: Any) -> Any:
        # only the model's inputs move: the lengths steer host-side masking and the targets are read on the
        # host by the loss and the metric
        sent = super().send(batch)
        if sent is not batch and isinstance(batch, Batch):
            sent = sent._replace(src_lengths=batch.src_lengths, tgt_out=batch.tgt_out)
        return sent

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        if not isinstance(batch, Batch):
            raise TypeError(f"Seq2SeqUpdater: expected a seq2seq Batch, got {type(batch).__name__}")
        eps = 1.0
        if self.model.training:
            eps = self.last_teacher_forcing = self.teacher_forcing_at(self.iteration)
        output = self.model(Tensor(batch.src), batch.src_lengths, Tensor(batch.tgt_in), teacher_forcing=eps)
        return sequence_cross_entropy(output[0], batch.tgt_out), output, batch.tgt_out


class _TeacherForcingLog(Callback):
    """Adds the teacher-forcing probability of the epoch's last batch to the epoch logs."""

    order = -20

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        logs["teacher_forcing"] = self.trainer.updater.last_teacher_forcing  # type: ignore[attr-defined]


class Seq2SeqTrainer(Trainer):
    """A :class:`~handgrad.train.Trainer` with a :class:`Seq2SeqUpdater`, :class:`TokenAccuracy` as the metric
    (unless given) and the teacher-forcing probability in the epoch logs. Other arguments as ``Trainer``."""

    def __init__(self, model: Any, optimizer: Any, teacher_forcing: float | TeacherForcingSchedule = 1.0,
                 metrics: Any = None, callbacks: Sequence[Callback] | None = None, grad_clip: float | None = None,
                 **kwargs: Any) -> None:
        updater = Seq2SeqUpdater(model, optimizer, teacher_forcing, grad_clip)
        super().__init__(updater=updater, metrics=[TokenAccuracy()] if metrics is None else metrics,
                         callbacks=[*(callbacks or []), _TeacherForcingLog()], **kwargs)

    @property
    def global_step(self) -> int:
        """Training batches seen: the teacher-forcing schedule's clock."""
        return self.updater.iteration

    @property
    def last_teacher_forcing(self) -> float:
        return self.updater.last_teacher_forcing  # type: ignore[attr-defined,no-any-return]


# -- decoding and scores ------------------------------------------------------------------------------------
def decode_ids(model: Any, sources: Sequence[Sequence[int]], max_len: int, beam_size: int = 1,
               length_penalty: float = 0.0, batch_size: int = 256) -> list[list[int]]:
    """Output ids (without ``<eos>``) for each source id list: greedy (``beam_size=1``) or beam search.

    Sources are decoded in batches of similar length (then put back in order), in eval mode under no_grad.
    """
    if beam_size < 1:
        raise ValueError(f"decode_ids: beam_size must be >= 1, got {beam_size}")
    if any(len(s) == 0 for s in sources):
        raise ValueError("decode_ids: a source sequence is empty")
    was_training = getattr(model, "training", False)
    model.eval()
    out: list[list[int]] = [[] for _ in sources]
    order = numpy.argsort([len(s) for s in sources], kind="stable")
    bs = max(1, batch_size // beam_size)
    try:
        with no_grad():
            for i in range(0, len(order), bs):
                idx = order[i : i + bs]
                lengths = numpy.array([len(sources[j]) for j in idx], numpy.int64)
                src = numpy.full((len(idx), int(lengths.max())), PAD, numpy.int64)
                for r, j in enumerate(idx):
                    src[r, : lengths[r]] = sources[j]
                step, state, select = model.decoder_step_fn(Tensor(module_device(model).send(src)), lengths)
                if beam_size == 1:
                    res = greedy_decode(step, state, len(idx), BOS, EOS, max_len)
                else:
                    hyps = beam_search(step, state, len(idx), BOS, EOS, max_len, beam_size=beam_size,
                                       length_penalty=length_penalty, select=select)
                    res = [h[0].tokens for h in hyps]
                for r, j in enumerate(idx):
                    out[j] = list(res[r])
    finally:
        model.train(was_training)
    return out


def attention_weights(model: Any, source: Sequence[int], output: Sequence[int]) -> numpy.ndarray:
    """Attention (T + 1, S) that the model paid to ``source`` while emitting ``output`` and then ``<eos>``.

    The decoder is fed ``<bos> output`` (teacher-forced), which are exactly its inputs while it decoded
    ``output`` greedily, so these are the weights of that decoding.
    """
    if getattr(model, "attention_kind", None) is None:
        raise ValueError("attention_weights: the model has no attention")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            dev = module_device(model)
            src = Tensor(dev.send(numpy.asarray([list(source)], numpy.int64)))
            tgt_in = Tensor(dev.send(numpy.asarray([[BOS, *output]], numpy.int64)))
            _, a = model(src, numpy.array([len(source)]), tgt_in)
    finally:
        model.train(was_training)
    return to_host(a.array[0]).astype(numpy.float64)


def sequence_scores(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> dict[str, float]:
    """Exact match (whole output right, <eos> included) and token accuracy of decoded outputs.

    Token accuracy compares position by position over each target plus its ``<eos>``; a prediction that is
    too short counts its missing positions wrong, extra tokens beyond the target are ignored.
    """
    if len(predicted) != len(targets):
        raise ValueError(f"sequence_scores: {len(predicted)} predictions for {len(targets)} targets")
    right = total = exact = 0
    for p, t in zip(predicted, targets):
        tt, pp = [*t, EOS], [*p, EOS]
        total += len(tt)
        right += sum(a == b for a, b in zip(pp, tt))
        exact += list(p) == list(t)
    n = len(targets)
    return {"exact_match": exact / n if n else 0.0, "token_accuracy": right / total if total else 0.0}


class DecodeValidation(Callback):
    """After every epoch, decode a validation set greedily (free running) and add
    ``{prefix}exact_match``, ``{prefix}greedy_token_accuracy`` and ``{prefix}bleu`` (corpus BLEU of the
    decoded, detokenised text against ``references``; ``<unk>`` outputs are dropped from the text, since
    they never match a reference word and 13a tokenisation would split one into three tokens) to the logs.
    (``val_token_accuracy`` stays the Trainer's teacher-forced one.)

    It runs before EarlyStopping / ModelCheckpoint (``order = -10``), so they can monitor these columns.
    """

    order = -10

    def __init__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], tgt_vocab: Vocab,
                 max_len: int, references: Sequence[str] | None = None, prefix: str = "val_",
                 batch_size: int = 256) -> None:
        self.sources, self.targets, self.tgt_vocab = list(sources), list(targets), tgt_vocab
        self.references = list(references) if references is not None else [tgt_vocab.decode(t) for t in targets]
        self.max_len, self.prefix, self.batch_size = max_len, prefix, batch_size
        self.last: dict[str, float] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        from handgrad.metrics import corpus_bleu

        pred = decode_ids(self.trainer.model, self.sources, self.max_len, batch_size=self.batch_size)
        s = sequence_scores(pred, self.targets)
        # "greedy_": the Trainer's own val_token_accuracy is the teacher-forced one
        scores = {"exact_match": s["exact_match"], "greedy_token_accuracy": s["token_accuracy"]}
        unk = self.tgt_vocab.unk_id
        scores["bleu"] = corpus_bleu([self.tgt_vocab.decode([i for i in p if i != unk]) for p in pred],
                                     self.references)
        self.last = scores
        for k, v in scores.items():
            logs[self.prefix + k] = v


def fit_seq2seq(
    model: Any, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], tgt_vocab: Vocab, *, epochs: int,
    batch_size: int, lr: float, max_len: int, teacher_forcing: float | TeacherForcingSchedule = 1.0,
    grad_clip: float | None = 5.0, patience: int = 3, monitor: str = "val_exact_match", mode: str = "max",
    out_dir: str | None = None, seed: int = 0, progress: bool | None = None,
    val_references: Sequence[str] | None = None, resume: str | None = None, verbose: bool = True,
    min_epochs: int = 0, run_name: str | None = None, resume_hint: str | None = None,
) -> Seq2SeqTrainer:
    """The standard run: Adam, bucketed batches, gradient-norm clipping, greedy decoding of the validation
    set after every epoch (:class:`DecodeValidation`), early stopping on ``monitor`` with the best weights
    restored (patience counted from epoch ``min_epochs`` on), and (with ``out_dir``) ``best``/``last``
    checkpoints plus the history (``run_name``/``resume_hint`` as in ``Trainer``). Returns the trainer
    (``trainer.history`` holds the logs, ``trainer.model`` the restored best model)."""
    from handgrad.optim import Adam
    from handgrad.train import EarlyStopping, ModelCheckpoint

    val = DecodeValidation([s for s, _ in val_pairs], [t for _, t in val_pairs], tgt_vocab, max_len,
                           references=val_references)
    stopper = EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True,
                            verbose=verbose, min_epochs=min_epochs)
    callbacks: list[Callback] = [val, stopper]
    if out_dir is not None:
        callbacks.append(ModelCheckpoint(out_dir, monitor=monitor, mode=mode))
    trainer = Seq2SeqTrainer(model, Adam(model.parameters(), lr=lr), teacher_forcing=teacher_forcing,
                             callbacks=callbacks, grad_clip=grad_clip, out_dir=out_dir, progress=progress,
                             verbose=verbose, run_name=run_name, resume_hint=resume_hint)
    train_loader = BucketBatchLoader(train_pairs, batch_size, shuffle=True, seed=seed)
    val_loader = BucketBatchLoader(val_pairs, max(batch_size, 256), shuffle=False)
    trainer.fit(train_loader, val_loader, epochs=epochs, resume=resume)
    return trainer
