"""Per-op overhead of a small graph, handgrad vs PyTorch CPU, in the same process.

The graph: a 16x16 matmul followed by 20 element-wise ops and a sum, forward + backward. At this size
the arithmetic is negligible, so the time is the framework's per-op cost (building nodes, walking the
graph). Prints handgrad's time, torch's time (CPU time of this process, torch on one thread) and their
ratio.

    python benchmarks/bench_overhead.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _graph(x: Any, w: Any, b: Any) -> Any:
    h = x @ w  # 1 matmul
    h = h + b  # 20 element-wise ops from here
    h = h * 0.5
    h = h.tanh()
    h = h - b
    h = h * h
    h = h + 1.0
    h = h.sqrt()
    h = h / 3.0
    h = h.exp()
    h = h.log()
    h = h.sigmoid()
    h = h * x
    h = h.relu()
    h = -h
    h = h + x
    h = h.abs()
    h = h.sin()
    h = h.cos()
    h = h * w
    h = h.clamp(-2.0, 2.0)
    return h.sum()


def _block(step: Callable[[], None], n: int) -> float:
    # CPU time of this process, not wall time: on a shared machine other processes steal the cores, and
    # process time counts only the work done here (torch runs single-threaded, so the two are comparable)
    t0 = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - t0) / n


def _compare(hg_step: Callable[[], None], torch_step: Callable[[], None], repeat: int, rounds: int = 9) -> tuple:
    """Alternate blocks of the two frameworks so that load from other processes hits both alike; report
    the best block time of each and the median of the per-round ratios."""
    for _ in range(min(200, repeat)):  # warm up
        hg_step()
        torch_step()
    n = max(repeat // rounds, 1)
    t_hg, t_torch, ratios = [], [], []
    for _ in range(rounds):
        a, b = _block(hg_step, n), _block(torch_step, n)
        t_hg.append(a)
        t_torch.append(b)
        ratios.append(a / b)
    return min(t_hg), min(t_torch), sorted(ratios)[len(ratios) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()

    import handgrad as hg

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((16, 16)).astype(args.dtype) for _ in range(3)]

    hx, hw, hb = (hg.tensor(a, requires_grad=True) for a in xs)

    def hg_step() -> None:
        hx.grad = hw.grad = hb.grad = None
        _graph(hx, hw, hb).backward()

    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a bench extra
        t_hg = min(_block(hg_step, max(args.repeat // 9, 1)) for _ in range(9))
        print(f"handgrad: {t_hg * 1e6:8.1f} us per forward+backward (torch not installed)")
        return
    torch.set_num_threads(1)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in xs)

    def torch_step() -> None:
        tx.grad = tw.grad = tb.grad = None
        _graph(tx, tw, tb).backward()

    # the two must compute the same thing, or the timing means nothing
    hg_step()
    torch_step()
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-5)
    t_hg, t_torch, ratio = _compare(hg_step, torch_step, args.repeat)

    n_ops = 22  # graph nodes: matmul + 20 element-wise + sum
    print(f"graph: 16x16 matmul + 20 element-wise ops + sum, {args.dtype}, forward+backward, best of 9 blocks")
    print(f"handgrad: {t_hg * 1e6:8.1f} us  ({t_hg * 1e6 / n_ops:.2f} us/op)")
    print(f"torch:    {t_torch * 1e6:8.1f} us  ({t_torch * 1e6 / n_ops:.2f} us/op)")
    print(f"ratio handgrad/torch: {ratio:.2f}x (median over interleaved rounds)")


if __name__ == "__main__":
    main()
