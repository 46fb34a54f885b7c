"""Time one LeNet training step (forward + backward + SGD update) in handgrad and in PyTorch.

LeNet on MNIST-sized input: batch 128 of 1x28x28 -> conv5x5 1->32, relu, maxpool 2 -> conv5x5 32->64,
relu, maxpool 2 -> flatten 1024 -> fc 128, relu -> fc 10 -> cross-entropy, then p -= lr * grad.
Both libraries run float32 on the same data and weights, with the same thread count (PyTorch via
``torch.set_num_threads``, NumPy's BLAS via the usual OMP/OPENBLAS environment). The machine may be
shared, so the two are interleaved step by step and the median of many repeats is reported.

    python benchmarks/bench_lenet.py [--repeats 40] [--threads N] [--clock wall|cpu] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=40, help="timed steps per library (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--profile", action="store_true", help="also print handgrad's time per op (forward/backward)")
    ap.add_argument("--no-torch", action="store_true", help="time handgrad only")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: process_time (robust to a loaded machine with --threads 1)")
    return ap.parse_args()


def main() -> None:
    args = _parse()
    # BLAS threads must be fixed before NumPy loads its BLAS, hence the late import
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
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
                p.data -= lr * p.grad.data
        return float(loss.item())

    # -- PyTorch --------------------------------------------------------------------------------------------
    torch_step = None
    if not args.no_torch:
        import torch
        import torch.nn.functional as TF

        torch.set_num_threads(args.threads)
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
        lh, lt = hg_step(), torch_step()
        if abs(lh - lt) > 1e-4 * max(1.0, abs(lt)):
            raise SystemExit(f"bench_lenet: first-step losses differ: handgrad {lh:.6f} vs torch {lt:.6f}")

    for _ in range(args.warmup):
        hg_step()
        if torch_step is not None:
            torch_step()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    th, tt_ = [], []
    for i in range(args.repeats):  # interleaved, alternating who goes first, so both see the same load
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for who in order:
            if who == 0:
                t0 = clock()
                hg_step()
                th.append(clock() - t0)
            elif torch_step is not None:
                t0 = clock()
                torch_step()
                tt_.append(clock() - t0)

    med_h = float(np.median(th)) * 1e3
    print(f"threads={args.threads} batch={b} repeats={args.repeats} clock={args.clock} numpy={np.__version__}")
    print(f"handgrad step: median {med_h:7.2f} ms  (min {min(th) * 1e3:7.2f})")
    if tt_:
        import torch

        med_t = float(np.median(tt_)) * 1e3
        ratios = np.array(th) / np.array(tt_)
        print(f"pytorch  step: median {med_t:7.2f} ms  (min {min(tt_) * 1e3:7.2f})  torch={torch.__version__}")
        print(f"ratio handgrad/pytorch: {med_h / med_t:.2f} (median of per-pair ratios {np.median(ratios):.2f}, "
              f"min/min {min(th) / min(tt_):.2f})")
    if args.profile:
        _profile(hg_step, clock)


def _profile(step, clock) -> None:

    """Time (by ``clock``) per Function.forward / backward over 10 steps, by op name."""
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
