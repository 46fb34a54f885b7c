"""``handgrad run one-to-many``: a class-conditioned sequence generator (the decks' one-to-many topology).

One input -- a digit class -- and a whole sequence out: the class sets the GRU's initial state,
``h_0 = tanh(E[c])``, and the network then writes an MNIST-1D signal one value at a time, each step reading
the previous value. It is trained with teacher forcing (the input at step t is the *true* ``x_{t-1}``; the
loss is the Gaussian negative log-likelihood of ``x_t``, i.e. the MSE up to a learned noise level ``sigma``)
and generates free-running (the input is its own previous output, plus ``sigma * z`` noise so that each
sample differs).

Whether the generated signals are the requested digits is judged by a classifier that never saw them: the
many-to-one GRU saved by ``handgrad run mnist1d`` (``--classifier``, default ``runs/mnist1d/model.safetensors``),
or, when that file is missing, a small GRU classifier trained here first. Reported: that classifier's accuracy
on real test signals and on generated ones (chance = 10%), teacher-forced vs free-running error, and a figure
of generated signals per class next to real ones.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy

import handgrad as hg
import handgrad.functional as F
from handgrad import nn, optim
from handgrad.data.sequences import load_mnist1d
from handgrad.experiments.char_lm import _resume_hint
from handgrad.experiments.mnist1d import build_classifier
from handgrad.train import Callback, ModelCheckpoint, Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, default=128, help="generator GRU hidden units (default 128)")
    p.add_argument("--classifier", default=os.path.join("runs", "mnist1d", "model.safetensors"),
                   help="weights of the mnist1d experiment's classifier (GRU 1x128) used as the judge")
    p.add_argument("--classifier-hidden", type=int, default=128, help="hidden size of that classifier")
    p.add_argument("--per-class", type=int, default=50, help="generated signals per class (default 50)")


def build_generator(n_classes: int, hidden: int) -> Any:
    """``model(y (B,), x_prev (T, B, 1)) -> (mean (T, B, 1))`` with teacher forcing; ``model.generate``."""

    class ConditionalGRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(n_classes, hidden)
            self.rnn = nn.GRU(1, hidden)
            self.out = nn.Linear(hidden, 1)
            self.log_sigma = nn.Parameter(numpy.zeros(1, numpy.float32))

        def initial_state(self, y: Any) -> Any:
            h0 = hg.tanh(self.embed(y))  # (B, H): the one input becomes the whole initial state
            return h0.reshape(1, *h0.shape)

        def forward(self, y: Any, x_prev: Any) -> Any:
            out, _ = self.rnn(x_prev, self.initial_state(y))
            return self.out(out)

        def generate(self, y: Any, steps: int, noise: float = 1.0, rng: Any = None) -> numpy.ndarray:
            """Free-running: each output (plus ``noise * sigma * z``) is the next input. Returns ``(B, steps)``."""
            rng = rng if rng is not None else numpy.random.default_rng(0)
            sigma = float(numpy.exp(self.log_sigma.numpy()[0]))
            with hg.no_grad():
                h = self.initial_state(y)
                x = hg.zeros(1, len(y), 1)
                outs = []
                for _ in range(steps):
                    o, h = self.rnn(x, h)
                    mean = self.out(o).numpy()
                    val = mean + noise * sigma * rng.standard_normal(mean.shape).astype(mean.dtype)
                    outs.append(val[0, :, 0])
                    x = hg.tensor(val)
            return numpy.stack(outs, axis=1)

    return ConditionalGRU()


def _gaussian_nll(mean: Any, target: Any, log_sigma: Any) -> Any:
    """mean over elements of ``(x - mu)^2 / (2 sigma^2) + log sigma`` (+ const): MSE with a learned scale."""

    d = mean - target
    return (d * d * hg.exp(log_sigma * -2.0) * 0.5 + log_sigma).mean()


class ShuffledBatches:
    """Mini-batches ``make(idx)`` of a fresh permutation of ``range(n)`` each epoch, drawn from ``self.generator``
    (seeded; the Trainer saves its state in checkpoints)."""

    def __init__(self, n: int, batch_size: int, make: Any, seed: int) -> None:
        self.n, self.batch_size, self.make = n, batch_size, make
        self.generator = numpy.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Any:
        perm = self.generator.permutation(self.n)
        for i in range(0, self.n, self.batch_size):
            yield self.make(perm[i : i + self.batch_size])


def _train_classifier(x: numpy.ndarray, y: numpy.ndarray, hidden: int, epochs: int, seed: int) -> Any:
    hg.manual_seed(seed)
    clf = build_classifier("GRU", hidden, 1)
    batches = ShuffledBatches(len(y), 100, lambda b: (hg.tensor(x[b]), hg.tensor(y[b])), seed)
    trainer = Trainer(clf, optim.Adam(clf.parameters(), lr=3e-3), F.cross_entropy, metrics=(), verbose=False,
                      on_interrupt="raise")
    trainer.fit(batches, epochs=epochs)
    return clf


class _Progress(Callback):
    """The generator's per-epoch record: the mean training NLL over its batches and the teacher-forced test MSE."""

    def __init__(self, gen: Any, test: tuple[Any, Any, Any], epochs: int) -> None:
        self.gen, self.test, self.epochs = gen, test, epochs
        self.losses: list[float] = []

    def on_epoch_start(self, epoch: int) -> None:
        self.losses = []

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self.losses.append(logs["loss"])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        y, prev, target = self.test
        with hg.no_grad():
            tf_mse = float(((self.gen(y, prev) - target).numpy() ** 2).mean())
        logs.update(nll=float(numpy.mean(self.losses)), test_teacher_forced_mse=tf_mse)
        if epoch == 1 or epoch % 10 == 0 or epoch == self.epochs:
            print(f"epoch {epoch:3d}  train nll {logs['nll']:.4f}  test teacher-forced mse {tf_mse:.4f}  "
                  f"sigma {math.exp(float(self.gen.log_sigma.numpy()[0])):.3f}", flush=True)


def _accuracy(clf: Any, x: numpy.ndarray, y: numpy.ndarray) -> float:

    clf.eval()
    with hg.no_grad():
        pred = clf(hg.tensor(x.astype(numpy.float32))).numpy().argmax(1)
    return float((pred == y).mean())


def run(opts: argparse.Namespace) -> dict[str, Any]:

    data = load_mnist1d(num_samples=600) if opts.quick else load_mnist1d()
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    if opts.quick:
        opts.hidden, opts.epochs, opts.per_class = min(opts.hidden, 16), min(opts.epochs, 2), min(opts.per_class, 5)
    steps = x_tr.shape[1]
    gen = build_generator(10, opts.hidden)
    opt = optim.Adam(gen.parameters(), lr=opts.lr)

    def tf_batch(x: numpy.ndarray) -> tuple[Any, Any]:
        seq = numpy.ascontiguousarray(x.T[:, :, None])  # (T, B, 1)
        prev = numpy.concatenate([numpy.zeros_like(seq[:1]), seq[:-1]])  # teacher forcing: true x_{t-1}
        return hg.tensor(prev), hg.tensor(seq)

    def batch(b: numpy.ndarray) -> tuple[tuple[Any, Any], Any]:
        prev, target = tf_batch(x_tr[b])
        return (hg.tensor(y_tr[b]), prev), target  # gen(y, prev) vs the true sequence

    batches = ShuffledBatches(len(y_tr), opts.batch_size, batch, opts.seed)
    progress = _Progress(gen, (hg.tensor(y_te), *tf_batch(x_te)), opts.epochs)
    trainer = Trainer(gen, opt, lambda out, target: _gaussian_nll(out, target, gen.log_sigma), metrics=(),
                      callbacks=[progress, ModelCheckpoint(opts.out, monitor="loss", save_best=False)],
                      out_dir=opts.out, progress=opts.progress, verbose=False, run_name="one-to-many",
                      resume_hint=_resume_hint("one-to-many", opts))
    trainer.fit(batches, epochs=opts.epochs, resume=getattr(opts, "resume", None))
    history = [{k: row[k] for k in ("epoch", "nll", "test_teacher_forced_mse")} for row in trainer.history.rows]
    gen.eval()
    labels = numpy.repeat(numpy.arange(10), opts.per_class)
    samples = gen.generate(hg.tensor(labels), steps, noise=1.0, rng=numpy.random.default_rng(opts.seed + 7))
    means = gen.generate(hg.tensor(numpy.arange(10)), steps, noise=0.0)
    judge_src = "mnist1d experiment"
    clf = None
    if os.path.isfile(opts.classifier) and not opts.quick:

        clf = build_classifier("GRU", opts.classifier_hidden, 1)
        clf.load_state_dict(hg.load(opts.classifier))
    if clf is None:
        judge_src = "GRU trained here"
        clf = _train_classifier(x_tr[:, :, None], y_tr, 16 if opts.quick else 64, 1 if opts.quick else 40, opts.seed)
    acc_real = _accuracy(clf, x_te[:, :, None], y_te)
    acc_gen = _accuracy(clf, samples[:, :, None], labels)
    per_class = [
        _accuracy(clf, samples[labels == c][:, :, None], labels[labels == c]) for c in range(10)
    ]
    print(f"judge ({judge_src}): real test accuracy {acc_real:.3f}; generated signals classified as the "
          f"requested digit {acc_gen:.3f} (chance 0.100)")
    _plot(samples, labels, x_tr, y_tr, means, os.path.join(opts.out, "generated.png"))
    return {
        "generated_class_accuracy": acc_gen,
        "judge_real_test_accuracy": acc_real,
        "judge": judge_src,
        "per_class_generated_accuracy": per_class,
        "test_teacher_forced_mse": history[-1]["test_teacher_forced_mse"],
        "sigma": math.exp(float(gen.log_sigma.numpy()[0])),
        "n_generated": int(len(labels)),
        "history": history,
        "interrupted": trainer.interrupted,
    }


def _plot(samples: numpy.ndarray, labels: numpy.ndarray, x_real: numpy.ndarray, y_real: numpy.ndarray,
          means: numpy.ndarray, path: str) -> None:

    matplotlib.use("Agg", force=False)

    fig, axes = plt.subplots(2, 10, figsize=(18, 4), sharey=True)
    for c in range(10):
        for s in samples[labels == c][:4]:
            axes[0, c].plot(s, lw=0.8)
        axes[0, c].plot(means[c], "k", lw=1.5)
        axes[0, c].set_title(f"generated {c}", fontsize=8)
        for s in x_real[y_real == c][:4]:
            axes[1, c].plot(s, lw=0.8)
        axes[1, c].set_title(f"real {c}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
    fig.suptitle("one-to-many: class -> initial state -> 40-step signal (black: noise-free rollout)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
