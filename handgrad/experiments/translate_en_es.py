"""``handgrad run translate-en-es``: English -> Spanish on short Bible verses; one BLEU table for
attention vs none and teacher forcing vs scheduled sampling, with greedy and beam-search decoding.

Data: :func:`handgrad.data.bible.load_verse_pairs` (World English Bible / Reina-Valera 1909 aligned by
verse, public domain, offline). Choices, and why:

* verses of at most ``--max-words`` words on both sides (default 20: 6,971 pairs; 15 would leave only
  2,947, too few to learn anything; longer verses cost time quadratically with attention);
* a seeded random split into test (``--n-test``, 500), validation (``--n-val``, 300) and training (the rest);
* word level, lower-cased (halves the vocabulary; the 1909 orthography is already noisy), vocabularies from
  the training set only, capped at ``--vocab`` (3,000) tokens seen at least twice: that covers about 97% of
  English and 92% of Spanish running words; the rest become ``<unk>``;
* BLEU = ``handgrad.metrics.corpus_bleu`` (= sacrebleu's default 13a BLEU) of the detokenised output (with
  ``<unk>`` dropped) against the lower-cased original Spanish verse.

Rows (same data, seed, size and budget each): no attention vs additive attention, each trained with teacher
forcing and with scheduled sampling (Bengio et al. 2015; inverse-sigmoid decay of the teacher-forcing
probability eps per training batch, eps = 1/2 at ``--ss-half`` of the planned steps). Every model: a
bidirectional LSTM encoder, an LSTM decoder, dropout 0.2, Adam 2e-3 on batches of 32 (more updates per epoch
than 64 for little extra time), gradient clipping, up to 20 epochs with early stopping on validation BLEU
(greedy; patience 4, counted from epoch ``--min-epochs`` 8 on, since BLEU sits near zero while the
decoder still emits "y , y , y .") and the best weights restored. ``--jobs 2`` trains two
rows at a time in separate processes (one per core). Each row reports validation and test BLEU with greedy
decoding and with beam search (``--beam`` K, length penalty ``--length-penalty`` alpha: hypotheses ranked
by log p / len^alpha).

Outputs in ``--out``: ``table.md`` (the table), ``results.json``, one folder per row (history, learning
curves, checkpoints, ``translator.safetensors``), ``translator.safetensors`` (the row with the best
validation BLEU, for ``handgrad translate``) and attention heat maps of a few test verses.
BLEU on ~6k verse pairs of archaic text is low; the numbers are what was measured.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy

from handgrad.data.bible import load_verse_pairs
from handgrad.engine.random import manual_seed
from handgrad.errors import ExperimentError
from handgrad.metrics import corpus_bleu
from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.plots import plot_attention
from handgrad.seq2seq.scheduled_sampling import TeacherForcingSchedule
from handgrad.seq2seq.training import attention_weights, decode_ids, encode_pairs, fit_seq2seq
from handgrad.seq2seq.translator import Translator
from handgrad.seq2seq.vocab import Vocab
from handgrad.train.plots import plot_history

EXPERIMENT = "translate-en-es"
ROWS = {  # key: (attention, training)
    "tf": (None, "teacher forcing"),
    "tf-attn": ("additive", "teacher forcing"),
    "ss": (None, "scheduled sampling"),
    "ss-attn": ("additive", "scheduled sampling"),
}


def add_arguments(p: Any) -> None:
    p.add_argument("--max-words", type=int, default=None, help="longest verse kept, in words (default 20)")
    p.add_argument("--n-val", type=int, default=None, help="validation pairs (default 300)")
    p.add_argument("--n-test", type=int, default=None, help="test pairs (default 500)")
    p.add_argument("--n-train", type=int, default=None, help="cap on training pairs (default: all the rest)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary cap per language (default 3000)")
    p.add_argument("--embedding", type=int, default=None, help="word embedding size (default 128)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden size per direction (default 128)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout (default 0.2)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"rows of the table to run (default {','.join(ROWS)})")
    p.add_argument("--beam", type=int, default=5, help="beam size for the beam-search column (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam length penalty alpha (default 1.0)")
    p.add_argument("--ss-half", type=float, default=0.5,
                   help="scheduled sampling: fraction of the planned steps where eps reaches 1/2 (default 0.5)")
    p.add_argument("--patience", type=int, default=4,
                   help="early-stopping patience in epochs on validation BLEU (default 4)")
    p.add_argument("--min-epochs", type=int, default=8,
                   help="early stopping cannot stop before this epoch (default 8: BLEU is ~0 at first)")
    p.add_argument("--jobs", type=int, default=1, help="train the rows in this many processes (default 1)")


def inverse_sigmoid_k(half_step: float) -> float:
    """The k >= 1 of eps_i = k / (k + exp(i / k)) with eps = 1/2 at ``half_step``: k ln k = half_step."""
    lo, hi = 1.0, max(2.0, half_step)
    for _ in range(100):  # k ln k is increasing for k >= 1: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * math.log(mid) < half_step else (lo, mid)
    return (lo + hi) / 2


def _texts(ids: list[list[int]], vocab: Any) -> list[str]:
    return [vocab.decode([i for i in row if i != vocab.unk_id]) for row in ids]


def _train_row(key: str, opts: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Train and score one row of the table; returns the row (and writes its folder). Runs in a worker
    process with ``--jobs`` > 1 (then its training log goes to ``ROW/train.log``)."""

    enc, refs, test = data["enc"], data["refs"], data["test"]
    src_vocab, tgt_vocab, max_src, max_tgt = data["src_vocab"], data["tgt_vocab"], data["max_src"], data["max_tgt"]
    attention, training = ROWS[key]
    out = os.path.join(opts.out, key)
    os.makedirs(out, exist_ok=True)
    log = sys.stdout
    if data["parallel"]:
        sys.stdout = open(os.path.join(out, "train.log"), "w", buffering=1)  # noqa: SIM115 - closed below
    try:
        manual_seed(opts.seed)  # same initial weights and data order for rows of the same architecture
        model = Seq2Seq(len(src_vocab), len(tgt_vocab), opts.embedding, opts.hidden, attention=attention,
                        dropout=opts.dropout)
        ss = training != "teacher forcing"
        tf: Any = TeacherForcingSchedule("inverse_sigmoid", k=data["ss_k"]) if ss else 1.0
        label = f"{'attention' if attention else 'no attention'}, {training}"
        print(f"\n== {key}: {label}" + (f" (inverse sigmoid k = {data['ss_k']:.1f})" if ss else ""), flush=True)
        t0 = time.perf_counter()
        trainer = fit_seq2seq(model, enc["train"], enc["val"], tgt_vocab, epochs=opts.epochs,
                              batch_size=opts.batch_size, lr=opts.lr, max_len=max_tgt, teacher_forcing=tf,
                              patience=opts.patience, monitor="val_bleu", mode="max", out_dir=out, seed=opts.seed,
                              progress=opts.progress, val_references=refs["val"], min_epochs=opts.min_epochs)
        train_time = time.perf_counter() - t0
        row: dict[str, Any] = {"row": key, "attention": attention or "none", "training": training}
        t1 = time.perf_counter()
        for split in ("val", "test"):
            src = [s for s, _ in enc[split]]
            greedy = decode_ids(model, src, max_tgt)
            beam = decode_ids(model, src, max_tgt, beam_size=opts.beam, length_penalty=opts.length_penalty)
            row[f"{split}_bleu_greedy"] = corpus_bleu(_texts(greedy, tgt_vocab), refs[split])
            row[f"{split}_bleu_beam"] = corpus_bleu(_texts(beam, tgt_vocab), refs[split])
        row["examples"] = [{"en": test[i][0], "es": test[i][1], "greedy": _texts([greedy[i]], tgt_vocab)[0],
                            "beam": _texts([beam[i]], tgt_vocab)[0]} for i in range(min(5, len(test)))]
        es = trainer.history.meta.get("early_stopping", {})
        row.update(best_epoch=int(es.get("best_epoch") or 0), epochs_run=len(trainer.history),
                   train_time_s=round(train_time, 1), eval_time_s=round(time.perf_counter() - t1, 1),
                   final_teacher_forcing=trainer.last_teacher_forcing,
                   parameters=int(sum(p.numel() for p in model.parameters())))
        row["translator"] = Translator(model, src_vocab, tgt_vocab, EXPERIMENT, max_src, max_tgt,
                                       meta={"row": key, "test_bleu_greedy": row["test_bleu_greedy"]}).save(
            os.path.join(out, "translator.safetensors"))
        if len(trainer.history):
            plot_history(trainer.history, os.path.join(out, "learning_curves.png"), metrics=("loss", "bleu"),
                         title=f"{EXPERIMENT}: {label}")
        if attention is not None:
            short = sorted(range(len(test)), key=lambda i: len(enc["test"][i][0]))
            for n, i in enumerate(short[len(short) // 4 :: max(1, len(short) // 4)][:3]):
                src_toks = [*src_vocab.tokenize(test[i][0]), "<eos>"]
                out_toks = [tgt_vocab.itos[j] for j in greedy[i]] + ["<eos>"]
                w = attention_weights(model, enc["test"][i][0], greedy[i])
                if len(greedy[i]) >= max_tgt:  # cut at the length limit: no <eos> was emitted
                    w, out_toks = w[:-1], out_toks[:-1]
                plot_attention(w, src_toks, out_toks, os.path.join(out, f"attention_{n}.png"),
                               title=f"{test[i][0]}\n-> {_texts([greedy[i]], tgt_vocab)[0]}")
    finally:
        if sys.stdout is not log:
            sys.stdout.close()
            sys.stdout = log
    print(f"{key}: val BLEU {row['val_bleu_greedy']:.2f} greedy / {row['val_bleu_beam']:.2f} beam; test BLEU "
          f"{row['test_bleu_greedy']:.2f} greedy / {row['test_bleu_beam']:.2f} beam; best epoch {row['best_epoch']} "
          f"of {row['epochs_run']} ({train_time:.0f}s training)", flush=True)
    for ex in row["examples"][:2]:
        print(f"  {ex['en']}\n    ref:    {ex['es']}\n    greedy: {ex['greedy']}\n    beam:   {ex['beam']}")
    return row


def run(opts: Any) -> dict[str, Any]:
    rows = [r.strip() for r in opts.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise ExperimentError(f"--rows: unknown row(s) {', '.join(bad) or '(none given)'}; "
                              f"choose from {', '.join(ROWS)}")
    for name in ("max_words", "n_val", "n_test", "vocab", "embedding", "hidden", "beam", "jobs"):
        if getattr(opts, name) < 1:
            raise ExperimentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    if not 0 <= opts.dropout < 1:
        raise ExperimentError(f"--dropout must be in [0, 1), got {opts.dropout}")
    try:
        pairs = load_verse_pairs(max_words=opts.max_words)
    except FileNotFoundError as e:
        raise ExperimentError(str(e)) from e
    perm = numpy.random.default_rng(opts.seed).permutation(len(pairs))
    if opts.n_val + opts.n_test >= len(pairs):
        raise ExperimentError(f"{len(pairs)} pairs of <= {opts.max_words} words leave no training set after "
                              f"{opts.n_val} validation and {opts.n_test} test pairs")
    test = [pairs[i] for i in perm[: opts.n_test]]
    val = [pairs[i] for i in perm[opts.n_test : opts.n_test + opts.n_val]]
    train = [pairs[i] for i in perm[opts.n_test + opts.n_val :]][: opts.n_train]
    src_vocab = Vocab.build([p[0] for p in train], level="word", min_freq=2, max_size=opts.vocab)
    tgt_vocab = Vocab.build([p[1] for p in train], level="word", min_freq=2, max_size=opts.vocab)
    enc = {name: encode_pairs([p[0] for p in d], [p[1] for p in d], src_vocab, tgt_vocab)
           for name, d in (("train", train), ("val", val), ("test", test))}
    refs = {"val": [p[1].lower() for p in val], "test": [p[1].lower() for p in test]}
    unk_rate = float(numpy.mean([i == Vocab.unk_id for _, t in enc["test"] for i in t]))
    print(f"{EXPERIMENT}: {len(pairs)} verse pairs of <= {opts.max_words} words: {len(train)} train / {len(val)} val / "
          f"{len(test)} test; vocabularies {len(src_vocab)} en, {len(tgt_vocab)} es; {unk_rate:.1%} of the test "
          f"Spanish words are <unk>", flush=True)
    steps_per_epoch = math.ceil(len(enc["train"]) / opts.batch_size)
    jobs = min(opts.jobs, len(rows))
    data = {"enc": enc, "refs": refs, "test": test, "src_vocab": src_vocab, "tgt_vocab": tgt_vocab,
            "max_src": max(len(s) for s, _ in enc["train"]), "max_tgt": max(len(t) for _, t in enc["train"]) + 1,
            "ss_k": inverse_sigmoid_k(opts.ss_half * steps_per_epoch * opts.epochs), "parallel": jobs > 1}
    if jobs > 1:

        print(f"{EXPERIMENT}: {len(rows)} rows in {jobs} processes (logs in {opts.out}/ROW/train.log)", flush=True)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            table = list(pool.map(_train_row, rows, [opts] * len(rows), [data] * len(rows)))
    else:
        table = [_train_row(key, opts, data) for key in rows]
    saved = {r["row"]: r.pop("translator") for r in table}
    ss_k = data["ss_k"]

    best = max(table, key=lambda r: r["val_bleu_greedy"])
    final = shutil.copyfile(saved[best["row"]], os.path.join(opts.out, "translator.safetensors"))
    lines = [f"| model | training | val BLEU greedy | test BLEU greedy | test BLEU beam {opts.beam} | best epoch | "
             "train time (s) |", "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {'attention' if r['attention'] != 'none' else 'no attention'} | {r['training']} | "
                     f"{r['val_bleu_greedy']:.2f} | {r['test_bleu_greedy']:.2f} | {r['test_bleu_beam']:.2f} | "
                     f"{r['best_epoch']}/{r['epochs_run']} | {r['train_time_s']:.0f} |")
    md = "\n".join(lines)
    with open(os.path.join(opts.out, "table.md"), "w") as f:
        f.write(md + "\n")
    print("\n" + md)
    print(f"translator (best validation BLEU: {best['row']}): {final}")
    return {
        "table": table,
        "best_row": best["row"],
        "translator": final,
        "n_pairs": len(pairs), "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "src_vocab": len(src_vocab), "tgt_vocab": len(tgt_vocab), "test_unk_rate": unk_rate,
        "scheduled_sampling_k": ss_k, "beam_size": opts.beam, "length_penalty": opts.length_penalty,
    }
