"""``handgrad run translate-dates``: dates written in many locales' styles -> ISO 8601, with attention.

Data: :func:`handgrad.data.dates.load_dates` (CLDR via babel, offline): "Samstag, 14. März 1987",
"14/3/87", "sábado, 14 de marzo de 1987" -> "1987-03-14". Training and validation dates come from the
training locales; the TEST set comes from held-out locales (regional variants of languages seen in
training), so the scores measure generalisation to new formats, not memorised ones.

Model: character level on both sides (source lower-cased: case carries no date information and lower-casing
halves the alphabet), a bidirectional LSTM encoder, additive (Bahdanau) attention and an LSTM decoder, trained
with teacher forcing, Adam and gradient clipping; early stopping on the validation exact match (greedy
decoding) with the best weights restored. Outputs (in ``--out``): ``translator.safetensors`` (for
``handgrad translate``), attention heat maps ``attention_*.png`` (source characters vs output characters),
``learning_curves.png``, ``history.csv``, checkpoints and ``results.json`` (test exact match and token
accuracy, per-style scores, the worst held-out locales, some errors).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from importlib.metadata import version
from typing import Any

from handgrad.data.dates import load_dates
from handgrad.errors import ExperimentError
from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.plots import plot_attention
from handgrad.seq2seq.training import attention_weights, decode_ids, encode_pairs, fit_seq2seq, sequence_scores
from handgrad.seq2seq.translator import Translator
from handgrad.seq2seq.vocab import Vocab
from handgrad.train.plots import plot_history

EXPERIMENT = "translate-dates"


def add_arguments(p: Any) -> None:
    p.add_argument("--n-train", type=int, default=None, help="training pairs (default 40000)")
    p.add_argument("--n-val", type=int, default=None, help="validation pairs, training locales (default 2000)")
    p.add_argument("--n-test", type=int, default=None, help="test pairs, held-out locales (default 4000)")
    p.add_argument("--embedding", type=int, default=None, help="character embedding size (default 32)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden size per direction (default 64)")
    p.add_argument("--attention", default="additive", choices=["additive", "general", "none"],
                   help="attention score (default additive)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    p.add_argument("--heatmaps", type=int, default=6, help="attention heat maps to save (default 6)")


def run(opts: Any) -> dict[str, Any]:
    for name in ("n_train", "n_val", "n_test", "embedding", "hidden"):
        if getattr(opts, name) < 1:
            raise ExperimentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    t0 = time.perf_counter()
    data = load_dates(n_train=opts.n_train, n_val=opts.n_val, n_test=opts.n_test, seed=opts.seed)
    train, val, test = data["train"], data["val"], data["test"]
    src_vocab = Vocab.build(train.sources, level="char", lowercase=True)
    tgt_vocab = Vocab.build(train.targets, level="char", lowercase=False)
    train_pairs = encode_pairs(train.sources, train.targets, src_vocab, tgt_vocab)
    val_pairs = encode_pairs(val.sources, val.targets, src_vocab, tgt_vocab)
    test_pairs = encode_pairs(test.sources, test.targets, src_vocab, tgt_vocab)
    max_src = max(len(s) for s, _ in train_pairs)
    max_tgt = max(len(t) for _, t in train_pairs) + 1
    n_unk = sum(len(src_vocab.unknown_tokens(s)) for s in test.sources)
    print(f"{EXPERIMENT}: {len(data['train_locales'])} training locales, {len(data['test_locales'])} held-out "
          f"locales; {len(train_pairs)} train / {len(val_pairs)} val / {len(test_pairs)} test pairs; "
          f"source alphabet {len(src_vocab)}, target alphabet {len(tgt_vocab)}; {n_unk} unseen characters in "
          f"the test sources ({time.perf_counter() - t0:.1f}s)", flush=True)

    attention = None if opts.attention == "none" else opts.attention
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), opts.embedding, opts.hidden, attention=attention)
    n_params = int(sum(p.numel() for p in model.parameters()))
    print(f"{EXPERIMENT}: {n_params:,} parameters; up to {opts.epochs} epochs, batch {opts.batch_size}, lr {opts.lr}",
          flush=True)
    t1 = time.perf_counter()
    try:
        trainer = fit_seq2seq(model, train_pairs, val_pairs, tgt_vocab, epochs=opts.epochs, batch_size=opts.batch_size,
                              lr=opts.lr, max_len=max_tgt, patience=opts.patience, out_dir=opts.out, seed=opts.seed,
                              progress=opts.progress, resume=opts.resume)
    except FileNotFoundError as e:
        raise ExperimentError(str(e)) from e
    train_time = time.perf_counter() - t1
    history = trainer.history

    t2 = time.perf_counter()
    pred = decode_ids(model, [s for s, _ in test_pairs], max_tgt)
    decode_time = time.perf_counter() - t2
    test_scores = sequence_scores(pred, [t for _, t in test_pairs])
    val_scores = sequence_scores(decode_ids(model, [s for s, _ in val_pairs], max_tgt), [t for _, t in val_pairs])
    texts = [tgt_vocab.decode(p) for p in pred]
    by_locale: dict[str, list[bool]] = defaultdict(list)
    for loc, hyp, ref in zip(test.locales, texts, test.targets):
        by_locale[loc].append(hyp == ref)
    worst = sorted(((sum(v) / len(v), loc) for loc, v in by_locale.items()))[:5]
    errors = [{"source": s, "target": r, "output": h} for s, r, h in zip(test.sources, test.targets, texts)
              if h != r][:10]
    print(f"{EXPERIMENT}: held-out locales: exact match {test_scores['exact_match']:.4f}, token accuracy "
          f"{test_scores['token_accuracy']:.4f} ({len(test_pairs)} dates); validation exact match "
          f"{val_scores['exact_match']:.4f}", flush=True)
    for e in errors[:5]:
        print(f"  error: {e['source']!r} -> {e['output']!r} (want {e['target']})")

    path = Translator(model, src_vocab, tgt_vocab, EXPERIMENT, max_src, max_tgt,
                      meta={"test_exact_match": test_scores["exact_match"]}).save(
        os.path.join(opts.out, "translator.safetensors"))
    print(f"translator: {path}  (try: handgrad translate {path} \"14. März 1987\")")
    heatmaps = []
    if attention is not None:
        # a spread of lengths: the examples sorted by source length, evenly spaced
        order = sorted(range(len(test_pairs)), key=lambda i: len(test.sources[i]))
        picks = [order[int(j * (len(order) - 1) / max(1, opts.heatmaps - 1))] for j in range(opts.heatmaps)]
        for n, i in enumerate(dict.fromkeys(picks)):
            src, out = test_pairs[i][0], pred[i]
            w = attention_weights(model, src, out)
            src_toks = [*src_vocab.tokenize(test.sources[i]), "<eos>"]
            out_toks = [tgt_vocab.itos[j] for j in out] + ["<eos>"]
            if len(out) >= max_tgt:  # cut at the length limit: no <eos> was emitted
                w, out_toks = w[:-1], out_toks[:-1]
            png = os.path.join(opts.out, f"attention_{n}.png")
            plot_attention(w, src_toks, out_toks, png,
                           title=f"{test.locales[i]}: {test.sources[i]} -> {texts[i]}")
            heatmaps.append(png)
        print(f"attention heat maps: {', '.join(heatmaps)}")
    if len(history):
        plot_history(history, os.path.join(opts.out, "learning_curves.png"), metrics=("loss", "token_accuracy"),
                     title=f"{EXPERIMENT} (held-out exact match {test_scores['exact_match']:.4f})")
    es = history.meta.get("early_stopping", {})
    results: dict[str, Any] = {
        "test_exact_match": test_scores["exact_match"],
        "test_token_accuracy": test_scores["token_accuracy"],
        "val_exact_match": val_scores["exact_match"],
        "val_token_accuracy": val_scores["token_accuracy"],
        "worst_test_locales": [{"locale": loc, "exact_match": acc} for acc, loc in worst],
        "test_errors": errors,
        "n_train": len(train_pairs), "n_val": len(val_pairs), "n_test": len(test_pairs),
        "train_locales": len(data["train_locales"]), "test_locales": len(data["test_locales"]),
        "unseen_test_chars": n_unk,
        "attention": opts.attention, "parameters": n_params,
        "best_epoch": int(es.get("best_epoch") or 0), "epochs_run": len(history),
        "train_time_s": round(train_time, 1), "test_decode_time_s": round(decode_time, 2),
        "translator": path, "heatmaps": heatmaps,
        # the dates come from CLDR through babel: the number of locales depends on babel's version
        "data": {"path": None, "source": f"babel {version('babel')} CLDR locales", "fingerprint": None},
    }
    if history.meta.get("interrupted"):
        results["interrupted"] = True
    return results
