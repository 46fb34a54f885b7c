"""Per-op overhead of a small graph, handgrad vs PyTorch CPU, in the same process.

The graph: a 16x16 matmul followed by 20 element-wise ops and a sum, forward + backward. At this size
the arithmetic is negligible, so the time is the framework's per-op cost (building nodes, walking the
graph). Prints handgrad's time, torch's time and their ratio.

    python benchmarks/bench_overhead.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np


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


def _time(step: Callable[[], None], repeat: int) -> float:
    for _ in range(min(200, repeat)):  # warm up
        step()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat // 5):
            step()
        best = min(best, (time.perf_counter() - t0) / (repeat // 5))
    return best


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

    t_hg = _time(hg_step, args.repeat)

    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a bench extra
        print(f"handgrad: {t_hg * 1e6:8.1f} us per forward+backward (torch not installed)")
        return
    torch.set_num_threads(1)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in xs)

    def torch_step() -> None:
        tx.grad = tw.grad = tb.grad = None
        _graph(tx, tw, tb).backward()

    t_torch = _time(torch_step, args.repeat)
    # the two must compute the same thing, or the timing means nothing
    hg_step()
    torch_step()
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-5)

    n_ops = 23  # matmul + 20 element-wise + sum ... counted as nodes in the graph (+ the leaf accumulations)
    print(f"graph: 16x16 matmul + 20 element-wise ops + sum, {args.dtype}, forward+backward")
    print(f"handgrad: {t_hg * 1e6:8.1f} us  ({t_hg * 1e6 / n_ops:.2f} us/op)")
    print(f"torch:    {t_torch * 1e6:8.1f} us  ({t_torch * 1e6 / n_ops:.2f} us/op)")
    print(f"ratio handgrad/torch: {t_hg / t_torch:.2f}x")


if __name__ == "__main__":
    main()
