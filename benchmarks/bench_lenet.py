"""Time one LeNet training step (forward + backward + SGD update) in handgrad and in PyTorch.

LeNet on MNIST-sized input: batch 128 of 1x28x28 -> conv5x5 1->32, relu, maxpool 2 -> conv5x5 32->64,
relu, maxpool 2 -> flatten 1024 -> fc 128, relu -> fc 10 -> cross-entropy, then p -= lr * grad.
Both libraries run float32 on the same data and weights (the first-step losses are checked equal), with
the same thread count (``_common.set_threads``: threadpoolctl for NumPy's BLAS, ``torch.set_num_threads``),
at each thread count of ``--threads`` in one run. The two alternate in blocks of ``--block`` steps for
``--rounds`` rounds (``_common.compare_blocks``); medians are reported.

    python benchmarks/bench_lenet.py [--threads 1,2] [--block 10] [--rounds 4] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _common import HEADER, check_losses, compare_blocks, compiled_vs_numpy, machine_report, row, set_threads  # noqa: E402


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block", type=int, default=10, help="steps per block (one library at a time)")
    ap.add_argument("--rounds", type=int, default=4, help="blocks per library (order flipped every round)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, each timed in this run")
    ap.add_argument("--profile", action="store_true", help="also print handgrad's time per op (forward/backward)")
    ap.add_argument("--profile-wall", action="store_true", help="with --profile: wall time per op, not CPU time "
                    "(at 2 threads CPU time counts both threads)")
    ap.add_argument("--no-torch", action="store_true", help="time handgrad only")
    ap.add_argument("--vs-numpy", action="store_true",
                    help="lever check: handgrad with its numba kernels vs handgrad's NumPy fallback (not PyTorch)")
    return ap.parse_args()


def main() -> None:
    args = _parse()
    import numpy as np

    import handgrad as hg
    import handgrad.functional as F
    import handgrad.nn

    rng = np.random.default_rng(0)
    b = args.batch
    x_np = rng.standard_normal((b, 1, 28, 28)).astype(np.float32)
    t_np = rng.integers(0, 10, size=b)

    def init(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    shapes = [((32, 1, 5, 5), 25), ((32,), 25), ((64, 32, 5, 5), 800), ((64,), 800),
              ((128, 1024), 1024), ((128,), 1024), ((10, 128), 128), ((10,), 128)]
    weights = [init(s, f) for s, f in shapes]
    lr = 0.01

    # -- handgrad -------------------------------------------------------------------------------------------
    def make_hg():  # a fresh handgrad model (same starting weights): one per side with --vs-numpy
        hp = [hg.nn.Parameter(w.copy()) for w in weights]
        hx, ht = hg.tensor(x_np), hg.tensor(t_np)

        def hg_step() -> float:
            w1, b1, w2, b2, w3, b3, w4, b4 = hp
            h = F.max_pool2d(hg.relu(F.conv2d(hx, w1, b1)), 2)
            h = F.max_pool2d(hg.relu(F.conv2d(h, w2, b2)), 2)
            h = hg.relu(F.linear(h.reshape(b, -1), w3, b3))
            loss = F.cross_entropy(F.linear(h, w4, b4), ht)
            for p in hp:
                p.grad = None
            loss.backward()
            with hg.no_grad():
                for p in hp:
                    p.array -= lr * p.grad.array
            return float(loss.item())
        return hg_step

    hg_step = make_hg()

    # -- PyTorch --------------------------------------------------------------------------------------------
    torch_step = None
    if not args.no_torch:
        import torch
        import torch.nn.functional as TF

        tp = [torch.tensor(w.copy(), requires_grad=True) for w in weights]
        tx, tt = torch.from_numpy(x_np), torch.from_numpy(t_np)
        opt = torch.optim.SGD(tp, lr=lr)

        def torch_step() -> float:
            w1, b1, w2, b2, w3, b3, w4, b4 = tp
            h = TF.max_pool2d(torch.relu(TF.conv2d(tx, w1, b1)), 2)
            h = TF.max_pool2d(torch.relu(TF.conv2d(h, w2, b2)), 2)
            h = torch.relu(TF.linear(h.reshape(b, -1), w3, b3))
            loss = TF.cross_entropy(TF.linear(h, w4, b4), tt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.item())

        # same weights, same data: the first losses must agree (a check that we time the same computation)
        check_losses("bench_lenet", hg_step(), torch_step())

    if args.vs_numpy:  # a second, identical handgrad model run with the kernels switched off
        hg_step, torch_step = compiled_vs_numpy(make_hg)
    print(machine_report())
    print(f"LeNet training step, batch {b}, float32; blocks of {args.block} steps x {args.rounds} rounds each side")
    print(HEADER)
    for n in (int(v) for v in args.threads.split(",")):
        set_threads(n)
        print(row("lenet-step", n, compare_blocks(hg_step, torch_step, args.block, args.rounds)), flush=True)
    if args.profile:
        _profile(hg_step, time.perf_counter if args.profile_wall else time.process_time)


def _profile(step, clock) -> None:
    """Time (by ``clock``: CPU time, or wall time with ``--profile-wall``) per Function.forward / backward over
    10 steps, by op name."""
    from collections import defaultdict

    from handgrad.engine.function import Function

    totals: dict[str, float] = defaultdict(float)
    patched = {}
    for cls in _all_subclasses(Function):
        for meth in ("forward", "backward"):
            if meth in cls.__dict__:
                orig = cls.__dict__[meth]
                patched[(cls, meth)] = orig

                def wrap(self, *a, _o=orig, _k=f"{cls.__name__}.{meth}"):
                    t0 = clock()
                    r = _o(self, *a)
                    totals[_k] += clock() - t0
                    return r

                setattr(cls, meth, wrap)
    t0 = clock()
    for _ in range(10):
        step()
    total = (clock() - t0) / 10
    for (cls, meth), orig in patched.items():
        setattr(cls, meth, orig)
    print(f"profile (per step, total {total * 1e3:.1f} ms):")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        if v / 10 > 1e-4:
            print(f"  {k:32s} {v / 10 * 1e3:7.2f} ms")


def _all_subclasses(cls):
    out = []
    for c in cls.__subclasses__():
        out.append(c)
        out.extend(_all_subclasses(c))
    return out


if __name__ == "__main__":
    main()
