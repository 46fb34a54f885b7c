"""Largest difference from PyTorch, forward and gradient, of every saturating op at extreme inputs.

The grid is tests/test_extreme_values.py's: -1e4 .. 1e4 log-spaced on both sides with 0, +-1e-8, +-18, +-30,
+-88, -104. For each op and dtype it prints the max absolute difference and the max relative difference
``|ours - torch| / |torch|`` over the points where PyTorch's value is a normal (non-zero, non-subnormal)
number, for the output and for d(sum w y)/dx (w a fixed ramp). PyTorch is the oracle only (a test/bench
dependency).

    python benchmarks/bench_extreme_values.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import handgrad as hg  # noqa: E402
import handgrad.functional as F  # noqa: E402

TF = torch.nn.functional
_POS = np.logspace(-8, 4, 25)
GRID = np.unique(np.concatenate([-_POS, [0.0], _POS, [-88.0, -18.0, 18.0, 88.0, -30.0, 30.0, -104.0]]))

OPS = {
    "sigmoid": (hg.sigmoid, torch.sigmoid),
    "tanh": (hg.tanh, torch.tanh),
    "softplus": (F.softplus, TF.softplus),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid),
    "silu": (F.silu, TF.silu),
    "elu": (F.elu, TF.elu),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "bce(sigmoid(x), 1)": (lambda x: F.binary_cross_entropy(hg.sigmoid(x), hg.ones_like(x), reduction="none"),
                           lambda x: TF.binary_cross_entropy(torch.sigmoid(x), torch.ones_like(x), reduction="none")),
    "bce(sigmoid(x), 0)": (lambda x: F.binary_cross_entropy(hg.sigmoid(x), hg.zeros_like(x), reduction="none"),
                           lambda x: TF.binary_cross_entropy(torch.sigmoid(x), torch.zeros_like(x),
                                                             reduction="none")),
    "bce_with_logits(x, 1)": (
        lambda x: F.binary_cross_entropy_with_logits(x, hg.ones_like(x), reduction="none"),
        lambda x: TF.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")),
    "bce_with_logits(x, 0)": (
        lambda x: F.binary_cross_entropy_with_logits(x, hg.zeros_like(x), reduction="none"),
        lambda x: TF.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")),
    "log_softmax (rows of 2)": (lambda x: F.log_softmax(x.reshape(-1, 2), 1),
                                lambda x: TF.log_softmax(x.reshape(-1, 2), 1)),
    "softmax (rows of 2)": (lambda x: F.softmax(x.reshape(-1, 2), 1), lambda x: TF.softmax(x.reshape(-1, 2), 1)),
    "logsumexp (rows of 2)": (lambda x: x.reshape(-1, 2).logsumexp(1), lambda x: x.reshape(-1, 2).logsumexp(1)),
}


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    normal = np.abs(b) >= np.finfo(b.dtype).tiny
    rel = (d[normal] / np.abs(b[normal].astype(np.float64))).max() if normal.any() else 0.0
    return float(d.max()), float(rel)


def main() -> None:
    print(f"{'op':26s} {'dtype':8s} {'fwd max abs':>12s} {'fwd max rel':>12s} {'grad max abs':>12s} "
          f"{'grad max rel':>12s}")
    for name, (ours, ref) in OPS.items():
        for np_dt in (np.float32, np.float64):
            x = GRID if "rows" not in name else GRID[: len(GRID) // 2 * 2]
            x = x.astype(np_dt)
            a, t = hg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            ya, yt = ours(a), ref(t)
            w = np.linspace(0.5, 1.5, ya.numel()).reshape(ya.shape).astype(np_dt)
            (ya * hg.tensor(w)).sum().backward()
            (yt * torch.tensor(w)).sum().backward()
            fa, fr = _diff(ya.numpy(), yt.detach().numpy())
            ga, gr = _diff(a.grad.numpy(), t.grad.numpy())
            print(f"{name:26s} {np.dtype(np_dt).name:8s} {fa:12.3g} {fr:12.3g} {ga:12.3g} {gr:12.3g}")


if __name__ == "__main__":
    main()
