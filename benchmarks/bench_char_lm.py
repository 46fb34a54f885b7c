"""Equal-budget char-LM head-to-head: the ``char-lm`` experiment's model in handgrad and the same model in PyTorch,
trained for the same wall-clock budget on the same machine, at 1 and at 2 threads; characters per second and
held-out bits per character for both (issue 11, "The char-LM target, restated").

Both sides get exactly the same setting:

* data: the bundled Shakespeare, the experiment's split (last 10% held out, never trained on), the same
  ``StreamLoader`` windows (``--batch-size`` streams x ``--bptt`` characters, new stream boundaries at every
  wrap-around from the same seed), the recurrent state carried between windows, detached;
* model: ``RNNLanguageModel`` (embedding -> stacked LSTM -> linear, the ``char-lm`` defaults 2 x 384, embedding
  64) against ``torch.nn.Embedding -> torch.nn.LSTM(num_layers, dropout=p) -> torch.nn.Linear`` with dropout
  ``p`` on the embeddings, between the layers and on the top layer's output (Zaremba placement: the
  recurrence itself untouched); the PyTorch model starts from handgrad's initial weights (handgrad's
  initialisers are PyTorch's scheme, and a copy makes the start identical: the eval-mode losses of the first
  window are checked equal);
* optimiser: Adam (``--lr``), gradient-norm clipping (``--clip``), cross-entropy mean over all positions, and the
  experiment's budget schedule: the learning rate decays linearly to 10% as the budget is spent, each side on
  its own clock.

The two trainings alternate in blocks of ``--block`` windows (``_common.compare_blocks``'s reason: each side
then sees the same machine load, and at 2 threads neither side's idle pool spins while the other runs for
long); each side's clock runs only while it trains, until each has spent ``--budget`` seconds. Then the final
weights are scored on the first ``--val-chars`` held-out characters (``char_lm.evaluate_bpc``'s protocol: 16
parallel streams, windows of 200, state carried), outside the budget. ``chars/s`` = training characters / own
training wall time. The machine report (CPU, BLAS kernel and threads, load) is printed first.

    python benchmarks/bench_char_lm.py [--budget 120] [--threads 1,2] [--block 5] [--val-chars 100000]

Defaults: 2 thread counts x 2 libraries x 120 s, plus evaluation: about 10 minutes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=120.0, help="training seconds (wall) per library and thread count")
    p.add_argument("--threads", default="1,2", help="comma-separated BLAS / intra-op thread counts")
    p.add_argument("--block", type=int, default=5, help="windows per block (one library at a time)")
    p.add_argument("--val-chars", type=int, default=100_000, help="held-out characters scored at the end")
    p.add_argument("--train-chars", type=int, default=0, help="use only the first N training characters (0 = all)")
    # the char-lm experiment's defaults (handgrad/experiments/char_lm.py and its registry entry)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from _common import machine_report, set_threads  # noqa: E402

import handgrad as hg  # noqa: E402
import handgrad.functional as F  # noqa: E402
from handgrad import optim  # noqa: E402
from handgrad.data.text import load_shakespeare  # noqa: E402
from handgrad.experiments.char_lm import evaluate_bpc  # noqa: E402
from handgrad.nn.utils.clip_grad import clip_grad_norm_  # noqa: E402
from handgrad.recurrent.generation import CharVocab, RNNLanguageModel  # noqa: E402
from handgrad.train.bptt import StreamLoader  # noqa: E402
from handgrad.train.bptt import streams as _streams  # noqa: E402
from handgrad.train.state import detach_state  # noqa: E402


class TorchCharLM(torch.nn.Module):
    """The char-lm model in PyTorch: embedding -> dropout -> LSTM (dropout between layers) -> dropout -> linear."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, embed)
        self.drop = torch.nn.Dropout(dropout)
        self.lstm = torch.nn.LSTM(embed, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.decoder = torch.nn.Linear(hidden, vocab)

    def forward(self, idx: torch.Tensor, state=None):
        out, state = self.lstm(self.drop(self.embedding(idx)), state)
        return self.decoder(self.drop(out)), state

    def load_from_handgrad(self, model: RNNLanguageModel) -> None:
        """Copy handgrad's weights (names: ``rnn.layers.k.*_l0`` -> ``lstm.*_lk``)."""
        sd = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
        mine = {"embedding.weight": sd["embedding.weight"], "decoder.weight": sd["decoder.weight"],
                "decoder.bias": sd["decoder.bias"]}
        for k in range(self.lstm.num_layers):
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mine[f"lstm.{w}_l{k}"] = sd[f"rnn.layers.{k}.{w}_l0"]
        self.load_state_dict(mine)


def torch_bpc(model: TorchCharLM, ids: np.ndarray, bptt: int = 200, n_streams: int = 16,
              max_chars: int | None = None) -> float:
    """``char_lm.evaluate_bpc`` for the PyTorch model: the same streams, windows and carried state."""
    data = _streams(ids, n_streams)
    if max_chars is not None:
        data = data[: max(max_chars // n_streams, 2)]
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for i in range(0, len(data) - 1, bptt):
            x = data[i : i + bptt]
            y = data[i + 1 : i + 1 + bptt]
            x = x[: len(y)]
            logits, state = model(torch.from_numpy(np.ascontiguousarray(x.T)), state)
            v = logits.shape[-1]
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, v), torch.from_numpy(np.ascontiguousarray(y.T).reshape(-1)), reduction="sum"))
            count += y.size
    model.train()
    return total / max(count, 1) / math.log(2)


class Side:
    """One library's training run: its model, optimiser, loader, carried state and own clock."""

    def __init__(self, name: str, args: argparse.Namespace, n_vocab: int, train_ids: np.ndarray,
                 init: RNNLanguageModel | None) -> None:
        self.name, self.args = name, args
        self.loader = StreamLoader(train_ids, args.batch_size, args.bptt, steps_per_epoch=None, shuffle=True,
                                   seed=args.seed)
        self.it = iter(self.loader)
        self.state = None
        self.elapsed, self.steps, self.losses = 0.0, 0, []
        if name == "handgrad":
            hg.manual_seed(args.seed)
            self.model = RNNLanguageModel(n_vocab, args.embed, args.hidden, args.layers, mode="LSTM",
                                          dropout=args.dropout)
            self.opt = optim.Adam(self.model.parameters(), lr=args.lr)
        else:
            torch.manual_seed(args.seed)
            self.model = TorchCharLM(n_vocab, args.embed, args.hidden, args.layers, args.dropout)
            self.model.load_from_handgrad(init)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.model.train()

    def _window(self):
        try:
            return next(self.it)
        except StopIteration:  # a pass is used up: new stream boundaries (the loader's shuffle), fresh state
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> None:
        """One truncated-BPTT window, timed on this side's clock (data preparation included)."""
        t0 = time.perf_counter()
        args = self.args
        lr = args.lr * (1.0 - 0.9 * min(self.elapsed / args.budget, 1.0))  # the experiment's budget schedule
        x, y, reset = self._window()
        if self.name == "handgrad":
            for g in self.opt.param_groups:
                g["lr"] = lr
            state = None if reset else detach_state(self.state)
            logits, self.state = self.model(hg.Tensor(x), state)
            v = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, v), hg.Tensor(y.reshape(-1)))
            self.opt.zero_grad()
            loss.backward()
            clip_grad_norm_(self.model.parameters(), args.clip)
            self.opt.step()
            value = float(loss.item())
        else:
            for g in self.opt.param_groups:
                g["lr"] = lr
            state = None if reset or self.state is None else tuple(s.detach() for s in self.state)
            logits, self.state = self.model(torch.from_numpy(x), state)
            v = logits.shape[-1]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), torch.from_numpy(y.reshape(-1)))
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.clip)
            self.opt.step()
            value = float(loss.detach())
        self.elapsed += time.perf_counter() - t0
        self.steps += 1
        self.losses.append(value)

    def done(self) -> bool:
        return self.elapsed >= self.args.budget

    def bpc(self, val_ids: np.ndarray) -> float:
        if self.name == "handgrad":
            return evaluate_bpc(self.model, val_ids, max_chars=self.args.val_chars)
        return torch_bpc(self.model, val_ids, max_chars=self.args.val_chars)


def first_losses(hs: Side, ts: Side, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Eval-mode (no dropout) losses of both untrained models on one window: equal if the start is the same."""
    hs.model.eval()
    ts.model.eval()
    with hg.no_grad():
        logits, _ = hs.model(hg.Tensor(x))
        lh = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), hg.Tensor(y.reshape(-1))).item())
    with torch.no_grad():
        logits, _ = ts.model(torch.from_numpy(x))
        lt = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     torch.from_numpy(y.reshape(-1))))
    hs.model.train()
    ts.model.train()
    return lh, lt


def run(args: argparse.Namespace, threads: int, train_ids: np.ndarray, val_ids: np.ndarray,
        n_vocab: int) -> list[dict]:
    set_threads(threads)
    hs = Side("handgrad", args, n_vocab, train_ids, None)
    ts = Side("torch", args, n_vocab, train_ids, hs.model)
    win = next(iter(StreamLoader(train_ids, args.batch_size, args.bptt, shuffle=False)))
    lh, lt = first_losses(hs, ts, win.x, win.y)
    if abs(lh - lt) > 1e-4 * max(1.0, abs(lt)):
        raise SystemExit(f"bench_char_lm: the untrained models differ: loss handgrad {lh:.6f} vs torch {lt:.6f}")
    print(f"[{threads} thread(s)] same start: eval-mode loss of the first window handgrad {lh:.6f} = torch {lt:.6f}",
          flush=True)
    r = 0
    while not (hs.done() and ts.done()):
        for side in ((hs, ts) if r % 2 == 0 else (ts, hs)):  # order flipped every round
            for _ in range(args.block):
                if side.done():
                    break
                side.step()
        r += 1
    rows = []
    chars = args.batch_size * args.bptt
    for side in (hs, ts):
        t0 = time.perf_counter()
        bpc = side.bpc(val_ids)
        rows.append({"library": side.name, "threads": threads, "steps": side.steps, "chars": side.steps * chars,
                     "train_s": side.elapsed, "chars_per_s": side.steps * chars / side.elapsed,
                     "train_bpc_last": float(np.mean(side.losses[-10:])) / math.log(2), "heldout_bpc": bpc,
                     "eval_s": time.perf_counter() - t0})
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    print(machine_report())
    train_text, val_text = load_shakespeare("train"), load_shakespeare("val")
    vocab = CharVocab(train_text + val_text)  # the experiment's vocabulary (84 characters)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    if args.train_chars:
        train_ids = train_ids[: args.train_chars]
    print(f"char-lm: LSTM {args.layers}x{args.hidden}, embedding {args.embed}, dropout {args.dropout}, "
          f"{args.batch_size} streams x {args.bptt}, Adam {args.lr:g} decaying to 10% over the budget, clip "
          f"{args.clip}; {len(train_ids):,} training chars, held-out score on the first {args.val_chars:,} of "
          f"{len(val_ids):,}; budget {args.budget:g} s (wall) per library, blocks of {args.block} windows")
    print(f"{'library':<9} {'thr':>3} {'steps':>6} {'chars':>9} {'train s':>8} {'chars/s':>8} {'train bpc':>9} "
          f"{'held-out bpc':>12}")
    rows = []
    for n in (int(v) for v in args.threads.split(",")):
        got = run(args, n, train_ids, val_ids, len(vocab))
        for row in got:
            print(f"{row['library']:<9} {row['threads']:>3} {row['steps']:>6} {row['chars']:>9} "
                  f"{row['train_s']:>8.1f} {row['chars_per_s']:>8.0f} {row['train_bpc_last']:>9.3f} "
                  f"{row['heldout_bpc']:>12.3f}", flush=True)
        h, t = got
        print(f"[{n} thread(s)] handgrad/torch: chars/s {h['chars_per_s'] / t['chars_per_s']:.2f}x, held-out bpc "
              f"{h['heldout_bpc']:.3f} vs {t['heldout_bpc']:.3f}", flush=True)
        rows += got
    return rows


if __name__ == "__main__":
    main(ARGS)
