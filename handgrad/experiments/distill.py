"""``handgrad run distill``: knowledge distillation (Hinton, Vinyals and Dean 2015) on handwritten digits.

Data: the 5,000 OpenCV handwritten digits (20x20, 500 per class, shipped with handgrad: ``load_digits``) -- the
MNIST-like set that exists offline here (MNIST itself is not installed), small enough that the teacher trains in
minutes on two shared cores. A seeded stratified split: 3,500 train / 500 validation / 1,000 test digits; errors
are counted on the 1,000 test digits (the paper counts them on MNIST's 10,000).

* teacher: MLP 400-1200-1200-10 with dropout 0.5 on the hidden layers and 0.2 on the input, trained on the
  training digits jittered by up to 2 pixels (as in the paper);
* student alone: MLP 400-64-64-10 (``--student-hidden``), no regularisation, hard labels only;
* distilled student: the same student trained on the same (unjittered) transfer set with
  ``distillation_loss`` = alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE (``--temperature``, ``--alpha``);
* the paper's omitted-class variant: the transfer set has no example of one class (``--omit``, 3 as in the
  paper); the distilled student learns about 3s only from the teacher's soft targets on other digits. Then, as
  in the paper, the bias of the omitted class is raised by the amount that maximises validation accuracy.

Every run uses early stopping on validation accuracy (best weights restored); learning curves are saved per run.
Results: ``results.md`` (the paper's table shape) and ``results.json``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

import handgrad.functional as F
from handgrad import nn
from handgrad.data import DataLoader, TensorDataset, load_digits
from handgrad.data.digits import DIGITS_PNG
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import manual_seed
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments._common import data_record
from handgrad.optim import Adam
from handgrad.train import EarlyStopping, MeanMetric, Trainer
from handgrad.train.plots import plot_history


def add_arguments(p: Any) -> None:
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft-target term (default 0.9)")
    p.add_argument("--teacher-hidden", type=int, default=1200, help="teacher hidden units (default 1200)")
    p.add_argument("--student-hidden", type=int, default=64, help="student hidden units (default 64)")
    p.add_argument("--omit", type=int, default=3, help="class left out of the transfer set (default 3; -1: skip)")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience (default 8)")


def _mlp(sizes: list[int], drop_in: float = 0.0, drop_hidden: float = 0.0) -> Any:
    layers: list[Any] = [nn.Flatten()]
    if drop_in > 0:
        layers.append(nn.Dropout(drop_in))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if drop_hidden > 0:
                layers.append(nn.Dropout(drop_hidden))
    return nn.Sequential(*layers)


class _Jitter:
    """Shuffled batches of (x shifted by up to ``shift`` pixels in each direction, packed targets)."""

    def __init__(self, x: numpy.ndarray, t: numpy.ndarray, batch_size: int, shift: int, seed: int) -> None:
        self.x, self.t, self.batch_size, self.shift, self.seed, self.epoch = x, t, batch_size, shift, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Any:
        rng = numpy.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.x))
        s = self.shift
        h, w = self.x.shape[-2:]
        padded = numpy.pad(self.x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=float(self.x.min()))
        for k in range(0, len(order), self.batch_size):
            b = order[k : k + self.batch_size]
            dy, dx = rng.integers(0, 2 * s + 1, (2, len(b)))
            xb = numpy.stack([padded[i, :, y0 : y0 + h, x0 : x0 + w] for i, y0, x0 in zip(b, dy, dx)])
            yield Tensor(xb), Tensor(self.t[b])


def _accuracy(out: Any, t: Any) -> float:
    return float((out.numpy().argmax(1) == t.numpy()[:, 0].astype(numpy.int64)).mean())


def run(opts: Any) -> dict[str, Any]:
    if opts.temperature <= 0 or not 0 <= opts.alpha <= 1:
        raise ExperimentError(f"--temperature must be > 0 and --alpha in [0, 1], got {opts.temperature}, {opts.alpha}")
    if not -1 <= opts.omit <= 9:
        raise ExperimentError(f"--omit must be a digit 0-9 or -1, got {opts.omit}")
    try:
        images, labels = load_digits(opts.data)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e
    rng = numpy.random.default_rng(opts.seed)
    n_tr, n_va, n_te = (30, 10, 20) if opts.quick else (350, 50, 100)  # per class
    tr, va, te = [], [], []
    for c in range(10):
        idx = rng.permutation(numpy.nonzero(labels == c)[0])
        tr.append(idx[:n_tr])
        va.append(idx[n_tr : n_tr + n_va])
        te.append(idx[n_tr + n_va : n_tr + n_va + n_te])
    tr, va, te = (rng.permutation(numpy.concatenate(v)) for v in (tr, va, te))
    x = images.astype(numpy.float32) / 255.0
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = ((x - mean) / std)[:, None]

    def predict(model: Any, xs: numpy.ndarray) -> numpy.ndarray:
        model.eval()
        with no_grad():
            out = numpy.concatenate([model(Tensor(xs[k : k + 500])).numpy() for k in range(0, len(xs), 500)])
        model.train()
        return out

    def packed(idx: numpy.ndarray, logits: numpy.ndarray | None) -> numpy.ndarray:
        t = numpy.zeros((len(idx), 11), numpy.float32)
        t[:, 0] = labels[idx]
        if logits is not None:
            t[:, 1:] = logits
        return t

    def hard_loss(out: Any, t: Any) -> Any:
        return F.cross_entropy(out, Tensor(t.numpy()[:, 0].astype(numpy.int64)))

    def soft_loss(out: Any, t: Any) -> Any:
        tt = t.numpy()
        return F.distillation_loss(out, Tensor(tt[:, 1:].astype(out.dtype)), Tensor(tt[:, 0].astype(numpy.int64)),
                                   temperature=opts.temperature, alpha=opts.alpha)

    def fit(tag: str, model: Any, loss_fn: Any, train_loader: Any, val_t: numpy.ndarray) -> dict[str, Any]:
        es = EarlyStopping(monitor="val_accuracy", mode="max", patience=opts.patience, restore_best_weights=True)
        trainer = Trainer(model, Adam(model.parameters(), lr=opts.lr), loss_fn,
                          metrics=(MeanMetric(_accuracy, "accuracy"),), callbacks=[es],
                          out_dir=os.path.join(opts.out, tag), progress=opts.progress, verbose=False)
        val = DataLoader(TensorDataset(x[va], val_t), batch_size=500)
        history = trainer.fit(train_loader, val, epochs=opts.epochs)
        plot_history(history, os.path.join(opts.out, tag, "learning_curves.png"), title=tag)
        meta = history.meta.get("early_stopping", {})
        pred = predict(model, x[te]).argmax(1)
        wrong = pred != labels[te]
        info = {"test_errors": int(wrong.sum()), "test_error_rate": float(wrong.mean()),
                "best_epoch": int(meta.get("best_epoch") or 0), "epochs_run": len(history)}
        print(f"  {tag}: {info['test_errors']} test errors of {len(te)} (best epoch {info['best_epoch']}, "
              f"ran {info['epochs_run']})", flush=True)
        return info

    print(f"distill: {len(tr)} train / {len(va)} val / {len(te)} test digits (20x20); T={opts.temperature}, "
          f"alpha={opts.alpha}", flush=True)
    results: dict[str, Any] = {"n_train": len(tr), "n_val": len(va), "n_test": len(te),
                               "temperature": opts.temperature, "alpha": opts.alpha}
    th, sh = opts.teacher_hidden, opts.student_hidden
    manual_seed(opts.seed)
    teacher = _mlp([400, th, th, 10], drop_in=0.2, drop_hidden=0.5)
    results["teacher"] = fit("teacher", teacher, hard_loss, _Jitter(x[tr], packed(tr, None), opts.batch_size, 2,
                                                                      opts.seed), packed(va, None))
    t_train, t_val = predict(teacher, x[tr]), predict(teacher, x[va])

    def student_loader(idx: numpy.ndarray, logits: numpy.ndarray | None) -> Any:
        return DataLoader(TensorDataset(x[idx], packed(idx, logits)), batch_size=opts.batch_size, shuffle=True,
                          seed=opts.seed)

    manual_seed(opts.seed + 1)
    student = _mlp([400, sh, sh, 10])
    results["student_alone"] = fit("student-alone", student, hard_loss, student_loader(tr, None), packed(va, None))
    manual_seed(opts.seed + 1)  # the same initial weights as the student alone
    distilled = _mlp([400, sh, sh, 10])
    results["distilled"] = fit("distilled", distilled, soft_loss, student_loader(tr, t_train), packed(va, t_val))
    rows = [("teacher", "teacher (1200-1200, dropout, jitter)"),
            ("student_alone", f"student alone ({sh}-{sh}, hard labels)"),
            ("distilled", f"distilled student ({sh}-{sh}, T={opts.temperature:g})")]
    if opts.omit >= 0:
        c = opts.omit
        keep = numpy.nonzero(labels[tr] != c)[0]
        manual_seed(opts.seed + 1)
        omitted = _mlp([400, sh, sh, 10])
        info = fit(f"distilled-without-{c}", omitted, soft_loss, student_loader(tr[keep], t_train[keep]),
                   packed(va, t_val))
        is_c = labels[te] == c
        logits = predict(omitted, x[te])
        info[f"errors_on_{c}"] = int((logits.argmax(1)[is_c] != c).sum())
        # the paper's fix: raise the omitted class's bias; the amount is chosen on the validation digits
        val_logits = predict(omitted, x[va])
        grid = numpy.arange(0.0, 15.01, 0.25)
        accs = [((val_logits + numpy.eye(10)[c] * b).argmax(1) == labels[va]).mean() for b in grid]
        b = float(grid[int(numpy.argmax(accs))])
        fixed = (logits + numpy.eye(10)[c] * b).argmax(1)
        info.update({"bias_shift": b, "test_errors_after_bias_shift": int((fixed != labels[te]).sum()),
                     f"errors_on_{c}_after_bias_shift": int((fixed[is_c] != c).sum()),
                     "n_test_of_class": int(is_c.sum())})
        print(f"  without {c}: {info[f'errors_on_{c}']} of the {int(is_c.sum())} test {c}s wrong; bias +{b:g} -> "
              f"{info['test_errors_after_bias_shift']} errors, {info[f'errors_on_{c}_after_bias_shift']} on {c}s",
              flush=True)
        results[f"distilled_without_{c}"] = info
        rows.append((f"distilled_without_{c}", f"distilled, no {c} in the transfer set"))
    lines = [f"| model | test errors (of {len(te)}) | error rate |", "|---|---|---|"]
    for key, name in rows:
        lines.append(f"| {name} | {results[key]['test_errors']} | {results[key]['test_error_rate']:.2%} |")
    if opts.omit >= 0:
        info = results[f"distilled_without_{opts.omit}"]
        lines.append(f"| ... with the {opts.omit}'s bias raised by {info['bias_shift']:g} | "
                     f"{info['test_errors_after_bias_shift']} | "
                     f"{info['test_errors_after_bias_shift'] / len(te):.2%} |")
    md = "\n".join(lines)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(md + "\n")
    print(md, flush=True)
    results["data"] = data_record(opts.data if opts.data is not None else DIGITS_PNG)
    return results
