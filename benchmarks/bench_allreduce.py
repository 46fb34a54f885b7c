"""MPI data parallelism on this machine: allreduce time vs message size, step time of 1 process x 2 threads vs
2 ranks x 1 thread, and the ring-allreduce model of scaling to N machines checked against the measured points.

    python benchmarks/bench_allreduce.py [--quick]        # starts the ranks itself (mpiexec -n 2)

1. ``Allreduce`` (sum, in place, float64) of 1 KiB .. 16 MiB on 2 ranks, over shared memory (OpenMPI's default
   on one node) and over TCP on loopback (``--mca btl tcp,self --mca btl_tcp_if_include lo``); median of
   repetitions, each started after a barrier.
   Both the median and the best repetition are reported; the model is fitted to the best ones (on a shared
   machine the median measures the other tenants as much as MPI).
2. One training step (forward, backward, gradient allreduce, Adam) of LeNet (batch 64, Fashion-MNIST size)
   and of a char-LSTM (2 x 256 LSTM, 50 steps x 32 streams): 1 process with 2 BLAS threads on the whole
   batch against 2 ranks with 1 thread each on half of it (``DistributedDataParallel``); the time spent in
   the gradient allreduce is reported separately.
3. The model: a ring allreduce of ``S`` bytes over ``N`` machines moves ``2 (N-1)/N * S`` bytes per machine,
   so ``t = a + 2 (N-1)/N * S / bw``. ``a`` and ``bw`` are fitted to the measured loopback points (N = 2:
   ``t = a + S / bw``) and the fit's error per point is printed; then the predicted step time
   ``compute(B) / N + allreduce(N)`` for 1, 10 and 25 Gbit/s links.

The machine may be shared: its load average is printed first; rerun when it is high.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe"]
TCP_FLAGS = ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
SIZES = [2**k for k in range(10, 25, 2)]  # 1 KiB .. 16 MiB


# -- the part that runs on the ranks ----------------------------------------------------------------------------
def worker_allreduce(out: str, quick: bool) -> None:
    import handgrad.distributed as dist

    comm = dist.init(enable=False)
    from mpi4py import MPI

    res = {}
    for size in SIZES:
        buf = np.ones(size // 8)
        reps = int(min(200, max(5, 2e7 / size))) // (4 if quick else 1) + 2
        times = []
        for _ in range(reps):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t)
        res[size] = [float(np.median(times[2:])), float(np.min(times[2:]))]
    if comm.Get_rank() == 0:
        Path(out).write_text(json.dumps(res))


def _models():
    import handgrad as hg
    import handgrad.functional as F
    import handgrad.nn as nn
    from handgrad.architectures import LeNet

    class CharLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(65, 64)
            self.rnn = nn.LSTM(64, 256, num_layers=2)
            self.head = nn.Linear(256, 65)

        def forward(self, x):  # x (T, B) ids -> logits (T*B, 65)
            out, _ = self.rnn(self.emb(x))
            return self.head(out.reshape(-1, 256))

    def lenet(batch: int, rng):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        return LeNet(), (hg.Tensor(x), hg.Tensor(rng.integers(0, 10, batch))), F.cross_entropy

    def lstm(batch: int, rng):
        x, y = rng.integers(0, 65, (50, batch)), rng.integers(0, 65, (50 * batch,))
        return CharLSTM(), (hg.Tensor(x), hg.Tensor(y)), F.cross_entropy

    return {"lenet": (lenet, 64), "lstm": (lstm, 32)}


def worker_step(out: str, name: str, steps: int) -> None:
    import handgrad as hg
    import handgrad.distributed as dist
    from handgrad import optim
    from handgrad.train import StandardUpdater

    dist.init(enable=False)
    world, rank = dist.get_world_size(), dist.get_rank()
    build, batch = _models()[name]
    hg.manual_seed(0)
    model, data, loss_fn = build(batch // world, np.random.default_rng(rank))
    ddp = dist.DistributedDataParallel(StandardUpdater(model, optim.Adam(model.parameters(), lr=1e-3), loss_fn))
    comm_time = [0.0]
    inner = ddp.allreduce_gradients

    def timed() -> None:
        t = time.perf_counter()
        inner()
        comm_time[0] += time.perf_counter() - t

    ddp.allreduce_gradients = timed
    for _ in range(2):
        ddp.update(data)
    dist.barrier()
    step_times = []
    comm_time[0] = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        ddp.update(data)
        step_times.append(time.perf_counter() - t)
    grad_bytes = sum(int(p.array.nbytes) for p in model.parameters())
    if rank == 0:
        Path(out).write_text(json.dumps({"step": float(np.median(step_times)), "comm": comm_time[0] / steps,
                                         "grad_bytes": grad_bytes}))


# -- the driver -------------------------------------------------------------------------------------------------
def _launch(args: list[str], ranks: int, threads: int, extra: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, __file__, "--worker", *args, out]
        if ranks > 1:
            cmd = [shutil.which("mpiexec"), *MPI_FLAGS, *extra, "-n", str(ranks), *cmd]
        subprocess.run(["timeout", "300", *cmd], check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "allreduce":
            worker_allreduce(rest[-1], rest[0] == "quick")
        else:
            worker_step(rest[-1], rest[0], int(rest[1]))
        return
    if shutil.which("mpiexec") is None:
        sys.exit("bench_allreduce: needs mpiexec (pip install 'handgrad[distributed]')")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    q = "quick" if args.quick else "full"
    shm = _launch(["allreduce", q], 2, 1)
    tcp = _launch(["allreduce", q], 2, 1, TCP_FLAGS)
    sizes = np.array(SIZES, dtype=float)
    print("\n| message | shared memory: median (best) | TCP loopback: median (best) | shm GB/s (best) "
          "| TCP GB/s (best) |\n|---|---|---|---|---|")
    for s in SIZES:
        (a, a0), (b, b0) = shm[str(s)], tcp[str(s)]
        print(f"| {_bytes(s)} | {a * 1e3:.3f} ({a0 * 1e3:.3f}) ms | {b * 1e3:.3f} ({b0 * 1e3:.3f}) ms | "
              f"{s / a0 / 1e9:.2f} | {s / b0 / 1e9:.2f} |")
    fits = {}
    for name, res in (("shm", shm), ("tcp", tcp)):
        t = np.array([res[str(s)][1] for s in SIZES])  # the best times: the machine is shared
        w = 1 / t  # relative least squares: every size counts alike
        A = np.stack([np.ones_like(sizes), sizes], 1) * w[:, None]
        a, inv_bw = np.linalg.lstsq(A, t * w, rcond=None)[0]
        pred = a + sizes * inv_bw
        fits[name] = (a, 1 / inv_bw)
        errs = ", ".join(f"{_bytes(s)} {p / m - 1:+.0%}" for s, p, m in zip(SIZES, pred, t))
        print(f"\nmodel t = a + S/bw fitted to {name} (best times): a = {a * 1e6:.1f} us, "
              f"bw = {1 / inv_bw / 1e9:.2f} GB/s; model/measured - 1: {errs}")
    steps = 5 if args.quick else 15
    print(f"\n| step ({steps} steps, median) | 1 process x 2 threads | 2 ranks x 1 thread | of which allreduce | "
          f"gradient |\n|---|---|---|---|---|")
    single = {}
    for name in ("lenet", "lstm"):
        one = _launch(["step", name, str(steps)], 1, 2)
        two = _launch(["step", name, str(steps)], 2, 1)
        single[name] = _launch(["step", name, str(steps)], 1, 1)
        print(f"| {name} | {one['step'] * 1e3:.1f} ms | {two['step'] * 1e3:.1f} ms | {two['comm'] * 1e3:.2f} ms | "
              f"{_bytes(two['grad_bytes'])} |")
    print("\npredicted step time on N machines, global batch fixed (compute = 1-thread step / N, ideal; "
          "allreduce = 2 (N-1)/N * gradient / link, no latency):")
    print("\n| model | 1-thread step | link | N=2 | N=4 | N=8 | N=16 |\n|---|---|---|---|---|---|---|")
    for name, res in single.items():
        comp, g = res["step"] - res["comm"], res["grad_bytes"]
        for gbit in (1, 10, 25):
            bw = gbit * 1e9 / 8
            cells = []
            for n in (2, 4, 8, 16):
                t = comp / n + 2 * (n - 1) / n * g / bw
                cells.append(f"{t * 1e3:.1f} ms ({comp / t:.1f}x)")
            print(f"| {name} | {comp * 1e3:.1f} ms | {gbit} Gbit/s | " + " | ".join(cells) + " |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _bytes(n: float) -> str:
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.0f} {unit}" if n % k == 0 else f"{n / k:.1f} {unit}"
    return f"{n} B"


if __name__ == "__main__":
    main()
