"""``handgrad run vanishing-gradients``: tanh RNN vs LSTM vs GRU on the adding problem (T = 100 by default).

The decks' picture of the vanishing gradient, measured: for each model, ``||dL/dh_t||`` (the BPTT delta at
every step, probed exactly by ``handgrad.recurrent.diagnostics``) against the distance ``T - 1 - t`` from the
loss, at initialisation and after training, plus the norm of the state Jacobian ``||dh_T/dh_t||``. Then
whether each model *uses* the long-range information: the adding problem's target depends on a value marked
in the first half of the sequence (>= T/2 steps before the output), and always predicting 1 scores
``MSE = 1/6 = 0.167``. The LSTM and GRU get far below that; the tanh RNN, whose gradient from the output has
died out long before reaching the first marker, stays at the baseline.

Outputs in the run folder: ``gradient_norms.png`` (the decks' figure), ``training.png`` (validation MSE vs
iteration, baseline dashed), ``results.json`` / ``results.md`` (the table).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy

import handgrad as hg
import handgrad.functional as F
from handgrad import nn, optim
from handgrad.data.sequences import ADDING_BASELINE_MSE, adding_problem
from handgrad.errors import ExperimentError
from handgrad.recurrent.diagnostics import hidden_state_gradients, jacobian_norms
from handgrad.recurrent.regularization import ClipTracker
from handgrad.train import Callback, Trainer

MODELS = ("rnn", "lstm", "gru")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq-len", type=int, default=100, help="sequence length T of the adding problem (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of every model (default 64)")
    p.add_argument("--steps", type=int, default=None, help="training iterations per model (default 2000)")
    p.add_argument("--models", default="rnn,lstm,gru", help="comma-separated subset of rnn,lstm,gru")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold (default 1.0)")
    p.add_argument("--eval-every", type=int, default=100, help="iterations between validation evaluations")
    p.add_argument("--solved-mse", type=float, default=0.01,
                   help="stop a model early once its validation MSE is below this (default 0.01; 0 = never)")
    p.add_argument("--probe-batch", type=int, default=16, help="samples used for the gradient-norm profiles")


def _build(mode: str, hidden: int) -> tuple[Any, Any]:

    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[mode]
    return cls(2, hidden), nn.Linear(hidden, 1)


def _profile(rnn: Any, head: Any, x: numpy.ndarray, y: numpy.ndarray) -> dict[str, numpy.ndarray]:
    """||dL/dh_t|| (batch mean) and ||dh_T/dh_t|| (spectral, batch mean) for every t.

    Measured on a float64 copy of the model: the tanh RNN's gradient falls below float32's smallest
    number (1e-45) within 100 steps, and the point is to see how far it falls.
    """


    rnn, head = copy.deepcopy(rnn).double(), copy.deepcopy(head).double()
    xt, yt = hg.tensor(x.astype(numpy.float64)), hg.tensor(y.astype(numpy.float64))
    gf = hidden_state_gradients(rnn, xt, lambda out, h_n: F.mse_loss(head(out[-1]), yt))
    jac = jacobian_norms(rnn, hg.tensor(x[:, :4].astype(numpy.float64)))
    return {"grad_norm": gf.grad_norm, "jacobian_norm": jac}


def _evaluate(rnn: Any, head: Any, x: Any, y: numpy.ndarray) -> float:

    with hg.no_grad():
        out, _ = rnn(x)
        pred = head(out[-1]).numpy()
    return float(((pred - y) ** 2).mean())


class AddingModel(nn.Module):
    """``head(rnn(x)[-1])``: the recurrent net reads the (T, B, 2) sequence, a linear head reads its last state."""

    def __init__(self, rnn: Any, head: Any) -> None:
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: Any) -> Any:
        out, _ = self.rnn(x)
        return self.head(out[-1])


class AddingStream:
    """Fresh adding-problem batches from one seeded generator: ``per_epoch`` per epoch (an "epoch" is the span
    between two validations), ``steps`` in all."""

    def __init__(self, batch_size: int, seq_len: int, steps: int, per_epoch: int, seed: int) -> None:
        self.batch_size, self.seq_len, self.steps, self.per_epoch = batch_size, seq_len, steps, per_epoch
        self.generator = numpy.random.default_rng(seed)
        self.drawn = 0

    def __len__(self) -> int:
        return min(self.per_epoch, self.steps - self.drawn)

    def __iter__(self) -> Any:
        for _ in range(len(self)):
            x, y = adding_problem(self.batch_size, self.seq_len, self.generator)
            self.drawn += 1
            yield hg.tensor(numpy.ascontiguousarray(x.transpose(1, 0, 2))), hg.tensor(y)


class _Validation(Callback):
    """After every ``eval_every`` iterations: the validation MSE, the log line, and a stop once solved."""

    def __init__(self, mode: str, model: AddingModel, stream: AddingStream, clip: ClipTracker, data: dict[str, Any],
                 solved_mse: float, log: Any) -> None:
        self.mode, self.model, self.stream, self.clip, self.data = mode, model, stream, clip, data
        self.solved_mse, self.log = solved_mse, log
        self.curve: list[tuple[int, float]] = [(0, _evaluate(model.rnn, model.head, data["x_val"], data["y_val"]))]
        self.solved_at: int | None = None
        self.last_loss = float("nan")
        self.start = time.perf_counter()

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self.last_loss = logs["loss"]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        it = self.stream.drawn
        mse = _evaluate(self.model.rnn, self.model.head, self.data["x_val"], self.data["y_val"])
        self.curve.append((it, mse))
        self.log(f"{self.mode:>4} it {it:5d}  train {self.last_loss:.4f}  val {mse:.4f}  "
                 f"clipped {self.clip.fraction:.0%}  {time.perf_counter() - self.start:.0f}s")
        if self.solved_at is None and mse < 0.05:
            self.solved_at = it
        if self.solved_mse > 0 and mse < self.solved_mse:
            self.trainer.stop_training = True


def _train_one(mode: str, opts: argparse.Namespace, data: dict[str, Any], log: Any) -> dict[str, Any]:
    hg.manual_seed(opts.seed)
    rnn, head = _build(mode, opts.hidden)
    model = AddingModel(rnn, head)
    clip = ClipTracker(opts.clip)
    # the same training stream for every model
    stream = AddingStream(opts.batch_size, opts.seq_len, opts.steps, opts.eval_every, opts.seed + 1)
    before = _profile(rnn, head, data["x_probe"], data["y_probe"])
    val = _Validation(mode, model, stream, clip, data, opts.solved_mse, log)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=opts.lr), F.mse_loss, metrics=(), callbacks=[val],
                      progress=opts.progress, verbose=False, on_interrupt="raise")
    trainer.updater.grad_clip = clip  # clips and counts how often it bit
    start = time.perf_counter()
    trainer.fit(stream, epochs=math.ceil(opts.steps / opts.eval_every))
    train_s = time.perf_counter() - start
    after = _profile(rnn, head, data["x_probe"], data["y_probe"])
    return {
        "val_mse": val.curve[-1][1],
        "iterations": stream.drawn,
        "solved_at_iteration": val.solved_at,
        "train_seconds": round(train_s, 1),
        "clip": clip.summary(),
        "curve": val.curve,
        "profile_init": {k: v.tolist() for k, v in before.items()},
        "profile_trained": {k: v.tolist() for k, v in after.items()},
    }


def _plots(results: dict[str, dict[str, Any]], seq_len: int, out_dir: str) -> None:

    matplotlib.use("Agg", force=False)


    colours = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    labels = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    dist = numpy.arange(seq_len)[::-1]
    for mode, r in results.items():
        for key, ls, when in (("profile_init", "--", "init"), ("profile_trained", "-", "trained")):
            g = numpy.asarray(r[key]["grad_norm"])
            axes[0].semilogy(dist, g / g[-1], ls, color=colours[mode], label=f"{labels[mode]} ({when})")
            j = numpy.asarray(r[key]["jacobian_norm"])
            axes[1].semilogy(dist, j, ls, color=colours[mode], label=f"{labels[mode]} ({when})")
        c = numpy.asarray(r["curve"])
        axes[2].semilogy(c[:, 0], c[:, 1], color=colours[mode], label=labels[mode])
    axes[0].set(xlabel="distance T - 1 - t from the loss", ylabel="||dL/dh_t|| / ||dL/dh_T||",
                title=f"gradient reaching h_t (adding problem, T={seq_len})")
    axes[1].set(xlabel="distance T - 1 - t", ylabel="||d s_T / d s_t||  (spectral)",
                title="state Jacobian norm (LSTM: s = (h, c))")
    axes[2].axhline(ADDING_BASELINE_MSE, color="k", ls=":", label="predict 1 (MSE 0.167)")
    axes[2].set(xlabel="iteration", ylabel="validation MSE", title="does the model use the first marker?")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gradient_norms.png"), dpi=120)
    plt.close(fig)


def run(opts: argparse.Namespace) -> dict[str, Any]:

    models = [m.strip().lower() for m in opts.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ExperimentError(f"--models: unknown model(s) {bad or opts.models!r}; choose from {', '.join(MODELS)}")
    if opts.seq_len < 4:
        raise ExperimentError(f"--seq-len must be >= 4, got {opts.seq_len}")
    if opts.quick:
        opts.seq_len, opts.hidden = min(opts.seq_len, 20), min(opts.hidden, 16)
        opts.steps = opts.steps or 20
        opts.eval_every = min(opts.eval_every, 10)
        n_val = 200
    else:
        n_val = 1000
    opts.steps = opts.steps or 2000

    gen = numpy.random.default_rng(10_000 + opts.seed)
    xv, yv = adding_problem(n_val, opts.seq_len, gen)
    xp, yp = adding_problem(opts.probe_batch, opts.seq_len, gen)
    data = {
        "x_val": hg.tensor(numpy.ascontiguousarray(xv.transpose(1, 0, 2))), "y_val": yv,
        "x_probe": numpy.ascontiguousarray(xp.transpose(1, 0, 2)), "y_probe": yp,
    }
    log_path = os.path.join(opts.out, "train.log")
    with open(log_path, "w") as logf:

        def log(msg: str) -> None:
            print(msg, flush=True)
            logf.write(msg + "\n")
            logf.flush()

        results = {m: _train_one(m, opts, data, log) for m in models}
    _plots(results, opts.seq_len, opts.out)
    lines = [
        f"Adding problem, T = {opts.seq_len}, hidden {opts.hidden}, batch {opts.batch_size}, Adam lr {opts.lr}, "
        f"clip {opts.clip}; baseline MSE {ADDING_BASELINE_MSE:.3f}",
        "",
        "| model | val MSE | iterations | solved (MSE < 0.05) at | grad ratio at distance T-1, init | trained "
        "| clipped | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {"seq_len": opts.seq_len, "baseline_mse": ADDING_BASELINE_MSE}
    for m, r in results.items():
        gi = numpy.asarray(r["profile_init"]["grad_norm"])
        gt = numpy.asarray(r["profile_trained"]["grad_norm"])
        ratio_i, ratio_t = float(gi[0] / gi[-1]), float(gt[0] / gt[-1])
        r["grad_ratio_far_init"], r["grad_ratio_far_trained"] = ratio_i, ratio_t
        lines.append(
            f"| {m} | {r['val_mse']:.4f} | {r['iterations']} | {r['solved_at_iteration'] or 'no'} | "
            f"{ratio_i:.1e} | {ratio_t:.1e} | {r['clip']['clip_fraction']:.0%} | {r['train_seconds']} |"
        )
        summary[f"{m}_val_mse"] = r["val_mse"]
        summary[f"{m}_solved"] = r["val_mse"] < 0.05
        summary[f"{m}_grad_ratio_far_init"] = ratio_i
        summary[f"{m}_grad_ratio_far_trained"] = ratio_t
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    summary["models"] = results
    return summary
