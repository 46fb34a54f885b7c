"""``handgrad run hmrnn-char-lm``: a hierarchical multiscale LSTM language model on characters.

Embedding -> 2-layer HM-LSTM (Chung et al. 2017) -> the paper's output module
h^e_t = ReLU(sum_l g^l_t W^l h^l_t), g^l_t = sigmoid(w^l . [h^1_t; ...; h^L_t]) -> softmax over characters.
Truncated BPTT over ``--batch-size`` parallel streams of the bundled Shakespeare (or ``--data FILE``), the
state (h, c and the boundaries) carried across windows and detached; Adam, gradient clipping at 1, the
boundary slope annealed from 1 to 5 (``slope_schedule``). Reports held-out bits per character and draws the
learned boundaries z^1, z^2 over a held-out sample (characters along x), as in the paper's figure 3.
The budget is in CPU minutes (``--minutes``), as in ``char-lm``.
"""

from __future__ import annotations

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
from handgrad.data.text import SHAKESPEARE_GZ
from handgrad.experiments._common import data_record
from handgrad.experiments.char_lm import _load_text, _streams
from handgrad.nn import Embedding, Linear, Module, Parameter
from handgrad.optim import Adam
from handgrad.recurrent.generation import CharVocab
from handgrad.recurrent.hmrnn import HMLSTM, slope_schedule
from handgrad.train import Callback, Trainer
from handgrad.train.bptt import BPTTUpdater, StreamLoader


class HMLSTMLanguageModel(Module):
    """ids (B, T) -> logits (B, T, V), boundaries (T, B, L), state."""

    def __init__(self, vocab: int, embed: int = 64, hidden: tuple[int, ...] = (256, 256), out: int = 256) -> None:
        super().__init__()

        self.embedding = Embedding(vocab, embed)
        self.hm = HMLSTM(embed, hidden)
        self.gate = Parameter(hg.randn(sum(hidden), len(hidden)) * (1.0 / math.sqrt(sum(hidden))))
        self.project = Linear(sum(hidden), out, bias=False)  # [W^1 ... W^L] as one GEMM on the stacked h^l
        self.head = Linear(out, vocab)
        self.hidden = tuple(hidden)

    def forward(self, ids: Any, state: Any = None) -> tuple[Any, Any, Any]:

        x = self.embedding(ids).transpose(0, 1)  # (T, B, E)
        hs, z, state = self.hm(x, state)
        cat = hg.cat(hs, dim=2)  # (T, B, sum H)
        g = (cat @ self.gate).sigmoid()  # (T, B, L)
        scaled = hg.cat([h * g[..., l : l + 1] for l, h in enumerate(hs)], dim=2)
        he = self.project(scaled).relu()
        return self.head(he).transpose(0, 1), z, state


class HMLSTMUpdater(BPTTUpdater):
    """Truncated BPTT for :class:`HMLSTMLanguageModel`: the boundary slope follows ``slope_schedule`` over the
    optimizer steps, the model's third output (the boundaries) is not needed for the loss; clipping at 1."""

    def __init__(self, model: Any, optimizer: Any, slope_rate: float) -> None:
        super().__init__(model, optimizer, F.cross_entropy, grad_clip=1.0)
        self.slope_rate = slope_rate

    def forward(self, x: Any, state: Any) -> tuple[Any, Any]:
        self.model.hm.slope = slope_schedule(self.iteration, self.slope_rate)
        logits, _, state = self.model(x, state)
        return logits, state


class _CPUBudget(Callback):
    """Training bits/char of every window, a progress line every epoch, and a stop when the CPU budget is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.process_time()
        self.losses: list[float] = []

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self.losses.append(logs["loss"] / math.log(2))
        if time.process_time() - self.start >= self.seconds:
            self.trainer.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if len(self.losses) % 50 == 0:
            print(f"step {len(self.losses)}: train {numpy.mean(self.losses[-50:]):.3f} bits/char, "
                  f"slope {self.trainer.model.hm.slope:.2f}", flush=True)


def add_arguments(p: Any) -> None:
    p.add_argument("--hidden", type=int, default=256, help="units per HM-LSTM layer (default 256)")
    p.add_argument("--bptt", type=int, default=100, help="truncated-BPTT window (default 100)")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget in CPU minutes (default 10)")
    p.add_argument("--slope-rate", type=float, default=2e-3, help="boundary slope growth per step (default 2e-3)")


def run(opts: Any) -> dict[str, Any]:

    train_text, val_text, source = _load_text(opts.data)
    vocab = CharVocab(train_text + val_text)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    if opts.quick:
        train_ids, val_ids, minutes, hidden = train_ids[:20000], val_ids[:3000], 0.05, 32
    else:
        val_ids, minutes, hidden = val_ids[:100_000], opts.minutes, opts.hidden
    model = HMLSTMLanguageModel(len(vocab), 64, (hidden, hidden), hidden)
    opt = Adam(model.parameters(), lr=opts.lr)
    print(f"HM-LSTM char-LM on {source}: {len(vocab)} symbols, {len(train_ids):,} train / {len(val_ids):,} held-out "
          f"characters; 2 x {hidden} units; {minutes} CPU minutes", flush=True)
    # truncated BPTT over --batch-size streams; an "epoch" is 50 windows (one progress line)
    stream = StreamLoader(train_ids, opts.batch_size, opts.bptt, steps_per_epoch=50, shuffle=False)
    budget = _CPUBudget(minutes * 60)
    trainer = Trainer(updater=HMLSTMUpdater(model, opt, slope_rate=opts.slope_rate), metrics=(), callbacks=[budget],
                      progress=opts.progress, verbose=False, on_interrupt="raise")
    trainer.fit(stream, epochs=10**9)
    losses, step = budget.losses, trainer.updater.iteration
    model.eval()
    total, count, state = 0.0, 0, None
    vdata = _streams(val_ids, 8)
    with hg.no_grad():
        for i in range(0, len(vdata) - 1, 200):
            x, yv = vdata[i : i + 200], vdata[i + 1 : i + 201]
            x = x[: len(yv)]
            logits, _, state = model(hg.Tensor(numpy.ascontiguousarray(x.T)), state)
            total += F.cross_entropy(logits.reshape(-1, len(vocab)),
                                     hg.Tensor(numpy.ascontiguousarray(yv.T).reshape(-1)), reduction="sum").item()
            count += yv.size
        sample = val_text[:120]
        _, z, _ = model(hg.Tensor(vocab.encode(sample)[None, :]))
    bpc = total / count / math.log(2)
    zs = z.numpy()[:, 0, :]
    rates = [float(zs[:, l].mean()) for l in range(zs.shape[1])]
    print(f"held-out bits/char {bpc:.3f} after {step} steps; boundary rates per layer {rates}")
    path = os.path.join(opts.out, "boundaries.png")
    _plot(sample, zs, path)
    print(f"boundaries: {path}")
    with open(os.path.join(opts.out, "train_curve.json"), "w") as f:
        json.dump(losses, f)
    return {"val_bits_per_char": bpc, "steps": step, "cpu_minutes": minutes, "hidden": hidden,
            "boundary_rate_layer1": rates[0], "boundary_rate_layer2": rates[1], "final_slope": model.hm.slope,
            "source": source,
            "data": data_record(opts.data if opts.data is not None else SHAKESPEARE_GZ)}


def _plot(text: str, z: numpy.ndarray, path: str) -> None:

    matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(max(8, len(text) * 0.13), 1.2 + 0.5 * z.shape[1]))
    ax.imshow(z.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, extent=(-0.5, len(text) - 0.5, z.shape[1] + 0.5, 0.5))
    ax.set_xticks(range(len(text)))
    ax.set_xticklabels([c if c != "\n" else "⏎" for c in text], fontsize=7, family="monospace")
    ax.set_yticks(range(1, z.shape[1] + 1))
    ax.set_yticklabels([f"z^{l + 1}" for l in range(z.shape[1])])
    ax.set_title("HM-LSTM boundaries (black = 1: the layer ends a segment here)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
