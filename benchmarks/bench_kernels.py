"""Each compiled-kernel lever's effect: handgrad with its numba kernels vs handgrad's NumPy fallback, same process.

The kernels are switched by their module flag (``handgrad.functional.rnn._kernels.ENABLED``), so the two sides
run the same model on the same data, alternating in blocks (``_common.compare_blocks``); "ratio" is
compiled / NumPy (below 1: the kernels pay). Cases are those of ``bench_rnn.py``.

    python benchmarks/bench_kernels.py [--threads 1,2] [--block 5] [--rounds 4] [--cases lstm-train,gru-train,...]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _common import compare_blocks, machine_report, set_threads  # noqa: E402


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default="lstm-train,gru-train,lstm-fwd,gru-fwd")
    return ap.parse_args()


def main() -> None:
    args = _parse()
    sys.argv = sys.argv[:1]  # bench_rnn parses its own (default) arguments at import
    import bench_rnn

    from handgrad.functional.rnn import _kernels

    def switched(f, on: bool):
        def g():
            _kernels.ENABLED = on
            return f()
        return g

    print(machine_report())
    print(f"{'case':<12} {'thr':>3} {'compiled ms':>11} {'numpy ms':>9} {'ratio':>6} {'round-ratio':>11} "
          f"{'cpu ratio':>9}")
    for case in args.cases.split(","):
        kind, what = case.split("-")
        dims = (bench_rnn.ARGS.T, bench_rnn.ARGS.B, bench_rnn.ARGS.hidden)
        # two copies of the same model, so that both sides start from the same weights
        (train_a, _), (fwd_a, _) = bench_rnn.build(kind, *dims)
        (train_b, _), (fwd_b, _) = bench_rnn.build(kind, *dims)
        on = switched(train_a if what == "train" else fwd_a, True)
        off = switched(train_b if what == "train" else fwd_b, False)
        if what == "train":
            la, lb = on(), off()
            assert abs(la - lb) < 1e-4 * abs(lb), (la, lb)
        for n in (int(v) for v in args.threads.split(",")):
            set_threads(n)
            r = compare_blocks(on, off, args.block, args.rounds)
            print(f"{case:<12} {n:>3} {r['hg'] * 1e3:>11.2f} {r['th'] * 1e3:>9.2f} {r['ratio']:>6.2f} "
                  f"{r['round_ratio']:>11.2f} {r['ratio_cpu']:>9.2f}", flush=True)
    _kernels.ENABLED = True


if __name__ == "__main__":
    main()
