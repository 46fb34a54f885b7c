"""``handgrad run char-lm``: a character-level language model (2-layer LSTM) on Shakespeare, or any text.

Training is truncated BPTT over ``B`` parallel streams: the training text is cut into ``B`` equal streams,
consumed ``--bptt`` characters at a time, and the recurrent state is carried from one window to the next
(detached, so gradients stop at the window boundary while the model still sees the whole past). Every
``--steps-per-epoch`` windows ("an epoch") the held-out bits per character are measured on the validation
text (the last 10% of the corpus, never trained on); the learning rate decays linearly to 10% as the budget
is spent (or, with ``--lr-schedule plateau``, is halved when the score stalls), and training stops early
after ``--patience`` epochs without improvement or when the ``--minutes`` budget is spent. The best weights
are kept, evaluated on the whole held-out split, and sampled from with temperature and top-k
(``handgrad.recurrent.generation.sample``), including the one-to-many case: text generated from the state
left by a prompt alone.

``bits per character = mean cross-entropy (nats) / ln 2``; a uniform guess over the 84 characters is 6.39.

Defaults (2 x 384 LSTM, dropout 0.15, 64 streams, windows of 100, Adam 3e-3, clipping 1.0) come from
trials at 33 CPU minutes each, about the single-core equivalent of 20 minutes on 2 cores (BENCHMARKS.md):
this setting reached 2.03 held-out bits/char against 2.09 for 2 x 256 with the same settings. Without
dropout a 2 x 256 model already fits its training text much better than held-out text after 2.5 passes
(1.81-1.86 bits/char on training text against 2.09 held out).

The loop is the shared :class:`~handgrad.train.Trainer` with a :class:`~handgrad.train.bptt.BPTTUpdater`
(the carried, detached state) over a :class:`~handgrad.train.bptt.StreamLoader` (the streams, their shifts);
``CharLMProgress`` (a callback) keeps the budget, the schedule and the held-out score, EarlyStopping the best
weights and ModelCheckpoint ``best.safetensors`` / ``last.safetensors`` (``--resume`` continues from either,
bit-exactly; so does ``interrupted.safetensors`` after Ctrl-C). Also written: ``history.json`` / ``.csv``,
``train.log``, ``samples.txt``, ``vocab.json``, ``learning_curves.png``.

The budget is measured in process CPU seconds by default (``--budget-clock cpu``): with one BLAS thread
(``OPENBLAS_NUM_THREADS=1``, which the shared machine needs anyway) that is the time of one core, so it does
not depend on what else the machine is running; ``--budget-clock wall`` uses the wall clock.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy

import handgrad as hg
import handgrad.functional as F
from handgrad import optim
from handgrad.data.text import SHAKESPEARE_GZ, load_shakespeare
from handgrad.errors import ExperimentError
from handgrad.experiments._common import data_record
from handgrad.recurrent.generation import CharVocab, RNNLanguageModel, sample
from handgrad.recurrent.regularization import ClipTracker
from handgrad.serialization import CheckpointError
from handgrad.train import Callback, EarlyStopping, ModelCheckpoint, Trainer
from handgrad.train.bptt import BPTTUpdater, StreamLoader
from handgrad.train.bptt import streams as _streams

# the per-epoch columns this experiment reports (results.json "history")
HISTORY_KEYS = ("epoch", "train_bpc", "val_bpc", "lr", "chars_seen", "budget_s", "wall_s", "clip_fraction")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, default=384, help="LSTM hidden units per layer (default 384)")
    p.add_argument("--layers", type=int, default=2, help="stacked LSTM layers (default 2)")
    p.add_argument("--embed", type=int, default=64, help="character embedding size (default 64)")
    p.add_argument("--mode", default="LSTM", choices=("LSTM", "GRU", "RNN"), help="recurrent cell (default LSTM)")
    p.add_argument("--bptt", type=int, default=100, help="truncated-BPTT window length (default 100)")
    p.add_argument("--dropout", type=float, default=0.15,
                   help="dropout on embeddings, between layers and on outputs (Zaremba placement; default 0.15)")
    p.add_argument("--variational", action="store_true", help="lock dropout masks over time (Gal & Ghahramani)")
    p.add_argument("--embedding-dropout", type=float, default=0.0, help="drop whole character vectors (default 0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold (default 1.0)")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget in minutes (default 20)")
    p.add_argument("--budget-clock", choices=("cpu", "wall"), default="cpu",
                   help="what --minutes measures: process CPU time (default) or wall-clock time")
    p.add_argument("--lr-schedule", choices=("budget", "plateau"), default="budget",
                   help="budget: lr decays linearly to 10%% as the budget is spent (default); "
                        "plateau: halve it when the held-out score stalls")
    p.add_argument("--steps-per-epoch", type=int, default=100, help="training windows between evaluations")
    p.add_argument("--val-chars", type=int, default=100_000,
                   help="held-out characters scored at each epoch (the whole split is scored at the end)")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without improvement")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-k", type=int, default=10, help="sample among the k most likely characters (0 = all)")
    p.add_argument("--sample-len", type=int, default=600, help="characters to generate (default 600)")
    p.add_argument("--prompt", default="ROMEO.\n", help="prefix for the samples")


def _load_text(data: str | None) -> tuple[str, str, str]:
    """(train, val, source): the bundled Shakespeare, a folder of .txt files, or one text file (last 10% val)."""
    if data is None:
        return load_shakespeare("train"), load_shakespeare("val"), "shakespeare (bundled)"
    if os.path.isdir(data):
        return load_shakespeare("train", root=data), load_shakespeare("val", root=data), f"folder {data}"
    if not os.path.isfile(data):
        raise ExperimentError(f"--data: no such file or folder: {data}")
    with open(data, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if len(text) < 1000:
        raise ExperimentError(f"--data: {data} has only {len(text)} characters; need at least 1000")
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:], f"file {data}"


def evaluate_bpc(
    model: Any, ids: numpy.ndarray, bptt: int = 200, n_streams: int = 16, max_chars: int | None = None
) -> float:
    """Held-out bits per character of ``model`` on ``ids``, state carried across windows, no gradient.

    ``ids`` is cut into ``n_streams`` equal consecutive pieces read in parallel; ``max_chars`` scores only the
    first ``max_chars / n_streams`` characters of each piece: a sample spread over the whole text, not just
    its beginning (one play can be much easier or harder than the average).
    """
    data = _streams(ids, n_streams)
    if max_chars is not None:
        data = data[: max(max_chars // n_streams, 2)]
    was = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    with hg.no_grad():
        for i in range(0, len(data) - 1, bptt):
            x = data[i : i + bptt]
            y = data[i + 1 : i + 1 + bptt]
            x = x[: len(y)]
            logits, state = model(hg.Tensor(numpy.ascontiguousarray(x.T)), state)
            v = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, v), hg.Tensor(numpy.ascontiguousarray(y.T).reshape(-1)),
                                   reduction="sum")
            total += float(loss.item())
            count += y.size
    model.train(was)
    return total / max(count, 1) / math.log(2)


class _Clock:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.t0 = self.now()

    def now(self) -> float:
        return time.process_time() if self.kind == "cpu" else time.perf_counter()

    def elapsed(self) -> float:
        return self.now() - self.t0


class CharLMProgress(Callback):
    """The char-LM's bookkeeping around the Trainer's loop: the budget (a linearly decaying learning rate and a
    stop when it is spent), held-out bits/char after every epoch, the log line, and (with ``--lr-schedule
    plateau``) halving the learning rate after an epoch without improvement. Its state (characters seen,
    budget used, the vocabulary) is saved in the Trainer's checkpoints, so ``--resume`` continues exactly."""

    order = -20  # before EarlyStopping and ModelCheckpoint read val_bpc

    def __init__(self, opts: argparse.Namespace, vocab: CharVocab, val_ids: numpy.ndarray, clip: ClipTracker,
                 chars_per_step: int, log: Any) -> None:
        self.opts, self.vocab, self.val_ids, self.clip, self.log = opts, vocab, val_ids, clip, log
        self.chars_per_step = chars_per_step
        self.clock, self.wall = _Clock(opts.budget_clock), _Clock("wall")
        self.budget = opts.minutes * 60.0
        self.chars_seen, self.budget_hit = 0, False
        self.losses: list[float] = []
        self.best = math.inf  # for the plateau schedule: the same rule as EarlyStopping(min_delta=1e-3)

    def on_epoch_start(self, epoch: int) -> None:
        self.clip.reset()
        self.losses = []

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self.losses.append(logs["loss"])
        self.chars_seen += self.chars_per_step
        if self.opts.lr_schedule == "budget":  # linear decay to 10% over the budget
            for g in self.trainer.optimizer.param_groups:
                g["lr"] = self.opts.lr * (1.0 - 0.9 * min(self.clock.elapsed() / self.budget, 1.0))
        if self.clock.elapsed() > self.budget:
            self.budget_hit = self.trainer.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        opt = self.trainer.optimizer
        val_bpc = evaluate_bpc(self.trainer.model, self.val_ids, max_chars=self.opts.val_chars)
        train_bpc = float(numpy.mean(self.losses)) / math.log(2)
        lr = opt.param_groups[0]["lr"]
        logs.update({"train_bpc": train_bpc, "val_bpc": val_bpc, "lr": lr, "chars_seen": self.chars_seen,
                     "budget_s": round(self.clock.elapsed(), 1), "wall_s": round(self.wall.elapsed(), 1),
                     "clip_fraction": self.clip.fraction})
        self.log(f"epoch {epoch:3d}  train {train_bpc:.3f}  held-out {val_bpc:.3f} bpc  lr {lr:.2e}  "
                 f"clipped {self.clip.fraction:.0%}  {self.chars_seen / 1e6:.2f}M chars  "
                 f"{self.clock.elapsed() / 60:.1f} {self.opts.budget_clock}-min  "
                 f"{self.wall.elapsed() / 60:.1f} wall-min")
        if val_bpc < self.best - 1e-3:
            self.best = val_bpc
        elif self.opts.lr_schedule == "plateau":  # halve the step size
            for g in opt.param_groups:
                g["lr"] *= 0.5
        if self.clock.elapsed() > self.budget:
            self.budget_hit = self.trainer.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"chars_seen": self.chars_seen, "budget_used": self.clock.elapsed(), "wall_used": self.wall.elapsed(),
                "best": self.best, "vocab": list(self.vocab.itos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["vocab"]) != list(self.vocab.itos):
            raise CheckpointError(f"--resume: {self.opts.resume} was trained on another text (its vocabulary differs)")
        self.chars_seen, self.best = int(state["chars_seen"]), float(state["best"])
        self.clock.t0 = self.clock.now() - float(state["budget_used"])  # the budget already spent counts
        self.wall.t0 = self.wall.now() - float(state["wall_used"])


def run(opts: argparse.Namespace) -> dict[str, Any]:
    train_text, val_text, source = _load_text(opts.data)
    if opts.quick:
        train_text, val_text = train_text[:60_000], val_text[:6_000]
        opts.hidden, opts.embed, opts.bptt = min(opts.hidden, 32), min(opts.embed, 16), min(opts.bptt, 32)
        opts.batch_size = min(opts.batch_size, 16)
        opts.steps_per_epoch, opts.val_chars, opts.sample_len = 10, 3000, 80
        opts.epochs = min(opts.epochs, 2)
    for key in ("hidden", "layers", "embed", "bptt", "steps_per_epoch", "val_chars"):
        if getattr(opts, key) < 1:
            raise ExperimentError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(opts, key)}")
    vocab = CharVocab(train_text + val_text)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    if len(train_ids) < opts.batch_size * (opts.bptt + 1):
        raise ExperimentError(f"the training text ({len(train_ids)} chars) is too short for batch-size x bptt")
    model = RNNLanguageModel(
        len(vocab), opts.embed, opts.hidden, opts.layers, mode=opts.mode, dropout=opts.dropout,
        embedding_dropout=opts.embedding_dropout, variational=opts.variational, vocab=vocab,
    )
    n_params = sum(p.numel() for p in model.parameters())
    opt = (optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay) if opts.weight_decay
           else optim.Adam(model.parameters(), lr=opts.lr))
    clip = ClipTracker(opts.clip)
    # truncated BPTT over B streams, windows of --bptt, the state carried (detached); new stream boundaries
    # (a random shift) at every wrap-around
    stream = StreamLoader(train_ids, opts.batch_size, opts.bptt, steps_per_epoch=opts.steps_per_epoch,
                          shuffle=True, seed=opts.seed)
    logf = open(os.path.join(opts.out, "train.log"), "a" if opts.resume else "w")  # a resumed run continues it

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"{source}: {len(train_ids):,} train / {len(val_ids):,} held-out chars, vocab {len(vocab)}; "
        f"{opts.mode} {opts.layers}x{opts.hidden}, {n_params:,} parameters; "
        f"budget {opts.minutes} {opts.budget_clock} min")
    progress = CharLMProgress(opts, vocab, val_ids, clip, opts.batch_size * opts.bptt, log)
    stopper = EarlyStopping(monitor="val_bpc", mode="min", min_delta=1e-3, patience=opts.patience,
                            restore_best_weights=True)
    ckpt = ModelCheckpoint(opts.out, monitor="val_bpc", mode="min", min_delta=1e-3)
    trainer = Trainer(updater=BPTTUpdater(model, opt, F.cross_entropy, grad_clip=clip), metrics=(),
                      callbacks=[progress, stopper, ckpt], out_dir=opts.out, progress=opts.progress, verbose=False,
                      run_name="char-lm", resume_hint=_resume_hint("char-lm", opts))
    if opts.resume:
        log(f"resuming from {opts.resume}")
    history = trainer.fit(stream, epochs=opts.epochs, resume=opts.resume)
    rows = [{k: row[k] for k in HISTORY_KEYS} for row in history.rows]
    stop_reason = "early stopping" if stopper.stopped_epoch else "budget" if progress.budget_hit else "epochs"
    if trainer.interrupted:
        stop_reason = "interrupted"
    # the best epoch's weights are back in the model (EarlyStopping's restore_best_weights)
    with open(os.path.join(opts.out, "vocab.json"), "w") as f:
        json.dump(vocab.to_json(), f)
    final_bpc = evaluate_bpc(model, val_ids)
    log(f"best epoch {stopper.best_epoch}: held-out {final_bpc:.3f} bits/char on all {len(val_ids):,} held-out "
        f"chars ({stop_reason})")
    if any(c not in vocab.stoi for c in opts.prompt):  # e.g. the Shakespeare default on another text
        prompt = val_text[:20]
        log(f"--prompt {opts.prompt!r} has characters this text lacks; using {prompt!r} from the held-out text")
        opts.prompt = prompt
    samples = {}
    for t in sorted({opts.temperature, 0.5, 1.0}):
        samples[f"T={t}"] = opts.prompt + sample(model, opts.prompt, opts.sample_len, t, opts.top_k or None)
    # one-to-many from an initial state: read the prompt, keep only the state, generate from it alone
    with hg.no_grad():
        model.eval()
        _, st = model(hg.Tensor(vocab.encode(opts.prompt)[None]), None)
    samples["from_state"] = sample(model, "", opts.sample_len, opts.temperature, opts.top_k or None, state=st)
    for k, s in samples.items():
        log(f"--- sample {k} ---\n{s}\n")
    with open(os.path.join(opts.out, "samples.txt"), "w") as f:
        for k, s in samples.items():
            f.write(f"--- {k} (top-k {opts.top_k}) ---\n{s}\n\n")
    _plot(rows, os.path.join(opts.out, "learning_curves.png"))
    logf.close()
    results: dict[str, Any] = {
        "heldout_bpc": final_bpc,
        "best_epoch_heldout_bpc_subset": stopper.best,
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(rows),
        "stop_reason": stop_reason,
        "chars_trained": progress.chars_seen,
        "train_budget_s": round(progress.clock.elapsed(), 1),
        "budget_clock": opts.budget_clock,
        "train_wall_s": round(progress.wall.elapsed(), 1),
        "parameters": n_params,
        "source": source,
        "data": data_record(opts.data if opts.data is not None else SHAKESPEARE_GZ),  # path + fingerprint
        "history": rows,
        "sample": samples.get(f"T={opts.temperature}", ""),
        "interrupted": trainer.interrupted,
    }
    return results


def _resume_hint(name: str, opts: argparse.Namespace) -> str:
    """What to type to continue after Ctrl-C (``{path}``: the checkpoint the Trainer saved)."""
    quick = " --quick" if opts.quick else ""
    return f"resume with: handgrad run {name}{quick} --out {opts.out} --resume {{path}}"


def _plot(history: list[dict[str, float]], path: str) -> None:
    matplotlib.use("Agg", force=False)
    if not history:
        return
    chars = [h["chars_seen"] / 1e6 for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(chars, [h["train_bpc"] for h in history], label="train (running)")
    ax.plot(chars, [h["val_bpc"] for h in history], label="held-out")
    ax.axhline(1.6, color="k", ls=":", label="1.6 bits/char")
    ax.set(xlabel="training characters (millions)", ylabel="bits per character", title="char-level LM")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
