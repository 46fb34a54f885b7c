"""``handgrad run tracking-train``: train the learned trackers (SearchCNN, SiamRPN) on generated sequences.

Training data: ``--train-sequences`` sequences of ``--frames`` frames from the *train* split (train sprites
and photographs; the benchmark uses the held-out test split), all attributes mixed. From each sequence,
pairs of frames ``(t, t + gap)`` where the object is at least half visible: ``gap`` up to 3 frames for
SearchCNN (it tracks frame to frame) and up to ``--max-gap`` for SiamRPN (its template is frame 1's), plus,
for a quarter of SearchCNN's pairs, one frame twice (a still image with synthetic motion). Each pair
becomes one training example with a random shift and scale of the search region (the trackers'
``make_example``). Validation: the same from the *val* split, for the loss curve. Optimiser: Adam, with the
learning rate halved at 50% and 75% of the epochs.

Writes ``search_cnn.safetensors`` / ``siamrpn.safetensors`` (what ``tracking-benchmark`` and
``handgrad track --tracker search-cnn|siamrpn`` load from ``runs/tracking-train/``), the loss curves
``<model>_history.json`` / ``learning_curves_<model>.png`` and, in ``results.json``, each model's final
losses and its one-pass success AUC / precision on ``--val-sequences`` validation sequences.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

import handgrad as hg
from handgrad import optim
from handgrad.data import DataLoader, Dataset
from handgrad.data.tracking_sequences import make_sequence
from handgrad.errors import ExperimentError
from handgrad.metrics.tracking import aggregate, evaluate_sequence
from handgrad.tracking import search_cnn, siamrpn
from handgrad.tracking.search_cnn import SearchCNN
from handgrad.tracking.siamrpn import SiamRPN
from handgrad.train import Callback, Trainer

matplotlib.use("Agg")

MODELS = ("search-cnn", "siamrpn")
_TAGS = (("SV",), ("IV",), ("POC",), ("FM",), ("IPR",), ("BC",), ("DIS",), ("SV", "IPR"), ("FOC",), ())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="search-cnn,siamrpn", help="comma-separated subset of search-cnn,siamrpn")
    p.add_argument("--train-sequences", type=int, default=None, help="training sequences (default 48)")
    p.add_argument("--frames", type=int, default=None, help="frames per training sequence (default 120)")
    p.add_argument("--pairs", type=int, default=None, help="training examples per sequence (default 80)")
    p.add_argument("--max-gap", type=int, default=None, help="largest frame gap of SiamRPN pairs (default 30)")
    p.add_argument("--val-sequences", type=int, default=None, help="validation sequences (default 6)")
    p.add_argument("--xcorr", choices=("depthwise", "up"), default="depthwise",
                   help="SiamRPN's cross-correlation (default depthwise)")
    p.add_argument("--negatives", type=float, default=0.0,
                   help="fraction of SiamRPN pairs whose search region shows another sequence's object, all "
                        "anchors negative (DaSiamRPN's distractor-aware pairs; default 0)")


class _Examples(Dataset):
    """Examples kept as uint8 crops (a quarter of the memory); items ``((z, x), target)`` in float32."""

    def __init__(self, z: np.ndarray, x: np.ndarray, target: tuple[np.ndarray, ...]) -> None:
        self.z, self.x, self.target = z, x, target

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> Any:
        z = self.z[i].astype(np.float32) / 255.0 - 0.5
        x = self.x[i].astype(np.float32) / 255.0 - 0.5
        t = tuple(a[i] for a in self.target)
        return (z, x), (t[0] if len(t) == 1 else t)


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round((a + 0.5) * 255.0), 0, 255).astype(np.uint8)


def _frame_pairs(seq: Any, frames: list[np.ndarray], rng: np.random.Generator, n: int, max_gap: int,
                 still: float) -> list[tuple[int, int]]:
    ok = np.flatnonzero(seq.visibility >= 0.5)
    out = []
    for _ in range(n * 4):
        if len(out) == n or len(ok) < 2:
            break
        a = int(rng.choice(ok))
        if rng.random() < still:
            out.append((a, a))
            continue
        b = a + int(rng.integers(1, max_gap + 1))
        if b < len(frames) and seq.visibility[b] >= 0.5:
            out.append((a, b))
    return out


def _examples(model: str, tracker: Any, split: str, n_seq: int, n_frames: int, per_seq: int, max_gap: int,
              seed: int, progress: bool, negatives: float = 0.0) -> _Examples:
    rng = np.random.default_rng(seed)
    zs, xs, ts = [], [], []
    prev = None  # the previous sequence's frames and boxes: the other objects of negative pairs
    for i in tqdm(range(n_seq), desc=f"{model} {split} pairs", disable=not progress, leave=False):
        seq = make_sequence(seed * 7919 + i, _TAGS[i % len(_TAGS)], n_frames, split=split)
        frames = [seq[k] for k in range(len(seq))]
        if model == "search-cnn":
            pairs = _frame_pairs(seq, frames, rng, per_seq, 3, still=0.25)
        else:
            pairs = _frame_pairs(seq, frames, rng, per_seq, max_gap, still=0.0)
        for a, b in pairs:
            if model == "search-cnn":
                z, x, t = search_cnn.make_example(frames[a], seq.boxes[a], frames[b], seq.boxes[b], rng)
                ts.append((t,))
            elif prev is not None and rng.random() < negatives:
                pf, pb = prev
                k = int(rng.integers(len(pf)))
                z, x, lab, off = siamrpn.make_example(frames[a], seq.boxes[a], pf[k], pb[k], rng, tracker.anchors,
                                                      negative=True)
                ts.append((lab, off))
            else:
                z, x, lab, off = siamrpn.make_example(frames[a], seq.boxes[a], frames[b], seq.boxes[b], rng,
                                                      tracker.anchors)
                ts.append((lab, off))
            zs.append(_to_u8(z))
            xs.append(_to_u8(x))
        prev = (frames, seq.boxes)
    target = tuple(np.stack(c) for c in zip(*ts))
    return _Examples(np.stack(zs), np.stack(xs), target)


class _SaveEachEpoch(Callback):
    """Write the tracker's weights after every epoch, so a run cut short still leaves a usable tracker."""

    def __init__(self, tracker: Any, path: str) -> None:
        self.tracker, self.path = tracker, path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.tracker.save(self.path)


def _loss_fn(model: str) -> Any:
    return search_cnn.search_cnn_loss if model == "search-cnn" else siamrpn.siamrpn_loss


def _val_tracking(make: Any, n: int, seed: int) -> dict[str, float]:
    """One-pass AUC / precision@20 of the tracker on ``n`` validation sequences (val split)."""
    rs = []
    for i in range(n):
        seq = make_sequence(10_000 + seed * 31 + i, _TAGS[i % len(_TAGS)], 100, split="val")
        tr = make()
        tr.init(seq[0], seq.boxes[0])
        boxes = [seq.boxes[0]]
        for k in range(1, len(seq)):
            boxes.append(tr.update(seq[k])[1])
        rs.append(evaluate_sequence(np.array(boxes), seq.boxes, seq.visible, attributes=seq.attributes))
    a = aggregate(rs)
    return {"val_auc": a["auc"], "val_precision20": a["precision20"]}


def _plot(history: Any, path: str, title: str) -> None:
    rows = list(history)
    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    ax.plot(ep, [r["loss"] for r in rows], "o-", label="train")
    if rows and "val_loss" in rows[0]:
        ax.plot(ep, [r["val_loss"] for r in rows], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(opts: argparse.Namespace) -> dict[str, Any]:
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ExperimentError(f"--models: unknown {bad or models}; choose from {','.join(MODELS)}")
    for k in ("train_sequences", "frames", "pairs", "max_gap", "val_sequences"):
        if getattr(opts, k) < (0 if k == "val_sequences" else 1):
            raise ExperimentError(f"--{k.replace('_', '-')} must be positive")
    progress = opts.progress is not False and (opts.progress or sys.stderr.isatty())
    results: dict[str, Any] = {}
    for model in models:
        hg.manual_seed(opts.seed)
        tracker = SearchCNN() if model == "search-cnn" else SiamRPN(xcorr=opts.xcorr)
        t0 = time.perf_counter()
        train = _examples(model, tracker, "train", opts.train_sequences, opts.frames, opts.pairs, opts.max_gap,
                          opts.seed, progress, opts.negatives)
        val = _examples(model, tracker, "val", max(1, opts.train_sequences // 8), opts.frames,
                        max(8, opts.pairs // 2), opts.max_gap, opts.seed + 1, progress)
        data_s = time.perf_counter() - t0
        print(f"{model}: {len(train)} training and {len(val)} validation examples ({data_s:.0f} s)")
        opt = optim.Adam(tracker.net.parameters(), lr=opts.lr)
        sched = optim.lr_scheduler.MultiStepLR(opt, [max(1, opts.epochs // 2), max(2, 3 * opts.epochs // 4)], 0.5)
        name = model.replace("-", "_")
        weights = os.path.join(opts.out, f"{name}.safetensors")
        trainer = Trainer(tracker.net, opt, _loss_fn(model), metrics=(), scheduler=sched, grad_clip=10.0,
                          callbacks=[_SaveEachEpoch(tracker, weights)], out_dir=None, progress=opts.progress,
                          verbose=True, run_name=f"tracking-train-{model}")
        loader = DataLoader(train, batch_size=opts.batch_size, shuffle=True, seed=opts.seed)
        vloader = DataLoader(val, batch_size=128)
        t1 = time.perf_counter()
        history = trainer.fit(loader, vloader, epochs=opts.epochs)
        train_s = time.perf_counter() - t1
        tracker.save(weights)
        history.to_json(os.path.join(opts.out, f"{name}_history.json"))
        _plot(history, os.path.join(opts.out, f"learning_curves_{name}.png"), f"{model} training")
        rows = list(history)
        res = {"examples": len(train), "val_examples": len(val), "epochs": len(rows),
               "train_loss": rows[-1]["loss"], "val_loss": rows[-1].get("val_loss"), "data_seconds": round(data_s, 1),
               "train_seconds": round(train_s, 1),
               "parameters": int(sum(p.numel() for p in tracker.net.parameters()))}
        if opts.val_sequences:
            cls = SearchCNN if model == "search-cnn" else SiamRPN
            res.update(_val_tracking(lambda cls=cls, path=weights: cls.load(path), opts.val_sequences, opts.seed))
        print(f"{model}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
        results[model] = res
    return results
