"""``handgrad run word-boundaries``: put the spaces back into text written without them, one decision per
character (does a word start here?), with a unidirectional and a bidirectional LSTM tagger.

Data: the bundled Shakespeare (:func:`handgrad.data.text.load_shakespeare`; training text = the first 90% of
the characters, held-out text = the last 10%, i.e. other plays), or ``--data FILE`` (its first 90% / last
10%). All white space is removed (:func:`~handgrad.recurrent.tagger.boundary_labels`); a character is tagged 1
when white space preceded it. Case and punctuation stay, so "ROMEO." and "Nay," are cues as well as letters.
The held-out text is cut in two: the first ``--val-chars`` characters for early stopping, the next
``--test-chars`` for the reported scores.

Training: every epoch ``--steps-per-epoch`` batches of ``--window``-character windows drawn at random
positions of the whole training text (so there is no fixed training set to overfit), Adam, gradient
clipping, early stopping on the validation F1 (best weights restored). Evaluation: the test text cut into
consecutive ``--eval-window`` windows; per character: precision/recall/F1 of "a word starts here" and accuracy
(next to the all-zeros baseline, whose accuracy is the share of characters that do not start a word).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy

import handgrad as hg
from handgrad.data.text import SHAKESPEARE_GZ, load_shakespeare
from handgrad.errors import ExperimentError
from handgrad.experiments._common import data_record
from handgrad.optim import Adam
from handgrad.recurrent.tagger import (
    BoundaryF1,
    CharTable,
    SequenceTagger,
    WindowLoader,
    boundary_labels,
    boundary_scores,
    predict_tags,
    segment,
    tagging_loss,
)
from handgrad.train import EarlyStopping, Trainer
from handgrad.train.plots import plot_history

EXPERIMENT = "word-boundaries"


def add_arguments(p: Any) -> None:
    p.add_argument("--embedding", type=int, default=None, help="character embedding size (default 32)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units per direction (default 96)")
    p.add_argument("--layers", type=int, default=1, help="stacked LSTM layers (default 1)")
    p.add_argument("--head", type=int, default=0, help="units of a ReLU layer before the output (default 0: none)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout (default 0)")
    p.add_argument("--window", type=int, default=None, help="training window in characters (default 100)")
    p.add_argument("--eval-window", type=int, default=500, help="evaluation window in characters (default 500)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="training batches per epoch (default 100)")
    p.add_argument("--val-chars", type=int, default=None, help="held-out characters for validation (default 30000)")
    p.add_argument("--test-chars", type=int, default=None, help="held-out characters for the test (default 100000)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    p.add_argument("--models", default="both", choices=["both", "uni", "bi"],
                   help="unidirectional, bidirectional, or both (default)")
    p.add_argument("--sample-chars", type=int, default=400, help="characters of the segmented sample (default 400)")


def _load(data: str | None) -> tuple[str, str, str]:
    if data is None:
        return load_shakespeare("train"), load_shakespeare("val"), "shakespeare (bundled)"
    if not os.path.isfile(data):
        raise ExperimentError(f"--data: no such file: {data}")
    with open(data, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if len(text.split()) < 200:
        raise ExperimentError(f"--data: {data} has only {len(text.split())} words; need at least 200")
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:], f"file {data}"


def _evaluate(model: Any, ids: numpy.ndarray, tags: numpy.ndarray, window: int) -> numpy.ndarray:
    """Predicted tags of the whole sequence, run in consecutive windows of ``window`` characters."""

    preds = []
    for (x, lengths), _ in WindowLoader(ids, tags, min(window, len(ids)), 64, shuffle=False):
        p = predict_tags(model, x, lengths)
        preds += [row[:n] for row, n in zip(p, lengths)]
    return numpy.concatenate(preds)


def run(opts: Any) -> dict[str, Any]:
    for key in ("embedding", "hidden", "layers", "window", "eval_window", "steps_per_epoch", "val_chars",
                "test_chars"):
        if getattr(opts, key) < 1:
            raise ExperimentError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(opts, key)}")
    if opts.head < 0 or not 0 <= opts.dropout < 1:
        raise ExperimentError(f"--head must be >= 0 and --dropout in [0, 1), got {opts.head} and {opts.dropout}")
    t0 = time.perf_counter()
    train_text, held_text, source = _load(opts.data)
    if opts.quick:
        train_text, held_text = train_text[:100_000], held_text[: 4 * (opts.val_chars + opts.test_chars)]
    train_chars, train_tags = boundary_labels(train_text)
    held_chars, held_tags = boundary_labels(held_text)
    if len(held_chars) < opts.val_chars + opts.test_chars:
        raise ExperimentError(f"the held-out text has {len(held_chars)} characters without spaces; "
                              f"--val-chars + --test-chars ask for {opts.val_chars + opts.test_chars}")
    if len(train_chars) < opts.window:
        raise ExperimentError(f"the training text has {len(train_chars)} characters, less than one --window")
    table = CharTable(train_chars)
    train_ids = table.encode(train_chars)
    v = slice(0, opts.val_chars)
    te = slice(opts.val_chars, opts.val_chars + opts.test_chars)
    val_ids, val_tags = table.encode(held_chars[v]), held_tags[v]
    test_chars, test_ids, test_tags = held_chars[te], table.encode(held_chars[te]), held_tags[te]
    base_acc = float((test_tags == 0).mean())
    print(f"{EXPERIMENT}: {source}: {len(train_chars):,} training characters without spaces "
          f"({train_tags.mean():.1%} start a word), {len(val_ids):,} val, {len(test_ids):,} test; "
          f"{len(table)} symbols; all-zeros baseline accuracy {base_acc:.4f} ({time.perf_counter() - t0:.1f}s)",
          flush=True)

    results: dict[str, Any] = {
        "source": source, "train_chars": len(train_chars), "val_chars": len(val_ids), "test_chars": len(test_ids),
        "test_boundary_rate": float(test_tags.mean()), "baseline_all_zeros_accuracy": base_acc,
        "window": opts.window, "eval_window": opts.eval_window,
    }
    kinds = {"both": [False, True], "uni": [False], "bi": [True]}[opts.models]
    samples: dict[str, str] = {}
    n_sample = min(opts.sample_chars, len(test_ids))
    table_rows = []
    for bi in kinds:
        name = "bidirectional" if bi else "unidirectional"
        out = os.path.join(opts.out, name)
        os.makedirs(out, exist_ok=True)
        hg.manual_seed(opts.seed)
        model = SequenceTagger(len(table), 2, opts.embedding, opts.hidden, num_layers=opts.layers,
                               bidirectional=bi, dropout=opts.dropout, head_size=opts.head)
        n_params = int(sum(p.numel() for p in model.parameters()))
        es = EarlyStopping(monitor="val_f1", mode="max", patience=opts.patience, restore_best_weights=True,
                           verbose=True)
        trainer = Trainer(model, Adam(model.parameters(), lr=opts.lr), tagging_loss, metrics=[BoundaryF1()],
                          callbacks=[es], grad_clip=5.0, out_dir=out, progress=opts.progress)
        train_loader = WindowLoader(train_ids, train_tags, opts.window, opts.batch_size, shuffle=True,
                                    batches=opts.steps_per_epoch, seed=opts.seed)
        val_loader = WindowLoader(val_ids, val_tags, min(opts.eval_window, len(val_ids)), 64, shuffle=False)
        print(f"{EXPERIMENT} [{name}]: {n_params:,} parameters; up to {opts.epochs} epochs of "
              f"{opts.steps_per_epoch} batches of {opts.batch_size} x {opts.window} characters", flush=True)
        t1 = time.perf_counter()
        history = trainer.fit(train_loader, val_loader, epochs=opts.epochs)
        train_time = time.perf_counter() - t1
        pred = _evaluate(model, test_ids, test_tags, opts.eval_window)
        s = boundary_scores(pred, test_tags)
        meta = history.meta.get("early_stopping", {})
        results[name] = {
            "test_f1": s["f1"], "test_precision": s["precision"], "test_recall": s["recall"],
            "test_accuracy": s["accuracy"], "val_f1_best": float(meta.get("best") or 0.0),
            "best_epoch": int(meta.get("best_epoch") or 0), "epochs_run": len(history), "parameters": n_params,
            "train_time_s": round(train_time, 1),
            "test_words_exactly_segmented": _word_recall(pred, test_tags),
        }
        if history.meta.get("interrupted"):
            results[name]["interrupted"] = True
        samples[name] = segment(test_chars[:n_sample], pred[:n_sample])
        table_rows.append((name, n_params, s))
        print(f"{EXPERIMENT} [{name}]: test F1 {s['f1']:.4f} (precision {s['precision']:.4f}, recall "
              f"{s['recall']:.4f}), accuracy {s['accuracy']:.4f} ({train_time:.0f}s training)", flush=True)
        if len(history):
            plot_history(history, os.path.join(out, "learning_curves.png"), metrics=("loss", "f1"),
                         title=f"{EXPERIMENT} {name} (test F1 {s['f1']:.4f})")

    print(f"\n{'model':<16} {'params':>8} {'F1':>7} {'prec':>7} {'recall':>7} {'acc':>7}")
    print(f"{'all zeros':<16} {0:>8} {0.0:>7.4f} {0.0:>7.4f} {0.0:>7.4f} {base_acc:>7.4f}")
    for name, n, s in table_rows:
        print(f"{name:<16} {n:>8,} {s['f1']:>7.4f} {s['precision']:>7.4f} {s['recall']:>7.4f} {s['accuracy']:>7.4f}")
    truth = segment(test_chars[:n_sample], test_tags[:n_sample])
    results["sample"] = {"input": test_chars[:n_sample], "truth": truth, **samples}
    print(f"\nheld-out sample without spaces:\n{test_chars[:n_sample]}\n\ntruth:\n{truth}")
    for name, text in samples.items():
        print(f"\n{name}:\n{text}")
    results["data"] = data_record(opts.data if opts.data is not None else SHAKESPEARE_GZ)
    return results


def _word_recall(pred: numpy.ndarray, tags: numpy.ndarray) -> float:
    """Share of the true words whose both ends were predicted exactly (start tagged 1, no 1 inside, next word's
    start tagged 1): a stricter, word-level score."""
    starts = numpy.flatnonzero(tags == 1)
    if len(starts) < 2:
        return 0.0
    ok = 0
    for a, b in zip(starts[:-1], starts[1:]):
        ok += bool(pred[a] == 1 and pred[b] == 1 and not pred[a + 1 : b].any())
    return ok / (len(starts) - 1)
