"""Time one ResNet basic block, forward + backward, in handgrad and in PyTorch.

The block (He et al. 2016, "basic block" with the identity skip), batch 32 of 64 channels at 32x32, float32:

    y = relu(bn2(conv3x3_2(relu(bn1(conv3x3_1(x))))) + x),   loss = sum(y * g)   (g: a fixed random tensor)

convolutions without bias, padding 1; batch norm in training mode (batch statistics, affine weight and bias).
Backward gives the gradients of x, both conv weights and both batch-norm affine parameters. Same weights and
data on both sides (the losses are checked equal); at each thread count of ``--threads`` the two alternate in
blocks of ``--block`` steps for ``--rounds`` rounds (``_common.compare_blocks``); medians are reported.

    python benchmarks/bench_resblock.py [--threads 1,2] [--block 5] [--rounds 4] [--profile]
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
    ap.add_argument("--block", type=int, default=5, help="steps per block (one library at a time)")
    ap.add_argument("--rounds", type=int, default=4, help="blocks per library (order flipped every round)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
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

    rng = np.random.default_rng(0)
    n, c, s = args.batch, args.channels, args.size
    x_np = rng.standard_normal((n, c, s, s)).astype(np.float32)
    g_np = rng.standard_normal((n, c, s, s)).astype(np.float32) / (n * s * s)
    bound = 1.0 / np.sqrt(9 * c)
    weights = [rng.uniform(-bound, bound, (c, c, 3, 3)).astype(np.float32),
               (1 + 0.1 * rng.standard_normal(c)).astype(np.float32), (0.1 * rng.standard_normal(c)).astype(np.float32),
               rng.uniform(-bound, bound, (c, c, 3, 3)).astype(np.float32),
               (1 + 0.1 * rng.standard_normal(c)).astype(np.float32), (0.1 * rng.standard_normal(c)).astype(np.float32)]

    def make_hg():  # a fresh handgrad model (same starting weights): one per side with --vs-numpy
        hp = [hg.tensor(w.copy(), requires_grad=True) for w in weights]
        hx = hg.tensor(x_np, requires_grad=True)
        hgt = hg.tensor(g_np)

        def hg_step() -> float:
            w1, a1, b1, w2, a2, b2 = hp
            h = hg.relu(F.batch_norm(F.conv2d(hx, w1, padding=1), None, None, a1, b1, training=True))
            y = hg.relu(F.batch_norm(F.conv2d(h, w2, padding=1), None, None, a2, b2, training=True) + hx)
            loss = (y * hgt).sum()
            for p in (*hp, hx):
                p.grad = None
            loss.backward()
            return float(loss.item())
        return hg_step

    hg_step = make_hg()

    torch_step = None
    if not args.no_torch:
        import torch
        import torch.nn.functional as TF

        tp = [torch.tensor(w.copy(), requires_grad=True) for w in weights]
        tx = torch.tensor(x_np, requires_grad=True)
        tg = torch.from_numpy(g_np)

        def torch_step() -> float:
            w1, a1, b1, w2, a2, b2 = tp
            h = torch.relu(TF.batch_norm(TF.conv2d(tx, w1, padding=1), None, None, a1, b1, training=True))
            y = torch.relu(TF.batch_norm(TF.conv2d(h, w2, padding=1), None, None, a2, b2, training=True) + tx)
            loss = (y * tg).sum()
            for p in (*tp, tx):
                p.grad = None
            loss.backward()
            return float(loss.detach())

        check_losses("bench_resblock", hg_step(), torch_step())

    if args.vs_numpy:  # a second, identical handgrad model run with the kernels switched off
        hg_step, torch_step = compiled_vs_numpy(make_hg)
    print(machine_report())
    print(f"ResNet basic block fwd+bwd, batch {n}, {c} channels, {s}x{s}, float32; blocks of {args.block} steps "
          f"x {args.rounds} rounds each side")
    print(HEADER)
    for t in (int(v) for v in args.threads.split(",")):
        set_threads(t)
        print(row("resblock", t, compare_blocks(hg_step, torch_step, args.block, args.rounds)), flush=True)
    if args.profile:
        from bench_lenet import _profile

        _profile(hg_step, time.perf_counter if args.profile_wall else time.process_time)


if __name__ == "__main__":
    main()
