"""Char-LM training step and inference forward: handgrad's fused LSTM/GRU vs ``torch.nn.LSTM``/``GRU`` on the
CPU, in the same process, with the same thread count and the same weights.

The step: T=100, B=32 token ids over a 65-symbol alphabet -> embedding 64 -> one recurrent layer of
hidden 256 -> linear to 65 -> cross-entropy over all T*B positions -> backward -> SGD. Both frameworks run
alternately, one step at a time (the machine may be shared: interleaving lets load hit both alike);
we print the median step time of each, their ratio, and the median of the per-pair ratios.

    python benchmarks/bench_rnn.py [--repeat 15] [--threads 2] [--cases lstm-train,gru-train,lstm-fwd,gru-fwd]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

CASES = ("lstm-train", "gru-train", "lstm-fwd", "gru-fwd")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15, help="timed steps per framework and case")
    p.add_argument("--threads", type=int, default=1, help="BLAS / intra-op threads (1: robust on a shared machine)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    return p.parse_args()


ARGS = _parse()
# the BLAS thread count must be fixed before NumPy loads its BLAS
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import handgrad  # noqa: E402
import handgrad.functional as F  # noqa: E402
from handgrad import nn  # noqa: E402
from handgrad.optim import SGD  # noqa: E402

V, E = 65, 64


def build(kind: str, T: int, B: int, H: int, seed: int = 0):
    """The same char-LM in both frameworks (weights copied from torch to handgrad) and one batch."""
    torch.manual_seed(seed)
    t_emb = torch.nn.Embedding(V, E)
    t_rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(E, H)
    t_head = torch.nn.Linear(H, V)
    t_params = [*t_emb.parameters(), *t_rnn.parameters(), *t_head.parameters()]
    t_opt = torch.optim.SGD(t_params, lr=0.1)

    h_rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(E, H)
    h_rnn.load_state_dict({k: v.detach().numpy() for k, v in t_rnn.state_dict().items()})
    h_emb = handgrad.tensor(t_emb.weight.detach().numpy(), requires_grad=True)
    h_w = handgrad.tensor(t_head.weight.detach().numpy(), requires_grad=True)
    h_b = handgrad.tensor(t_head.bias.detach().numpy(), requires_grad=True)
    h_params = [h_emb, *h_rnn.parameters(), h_w, h_b]
    h_opt = SGD(h_params, lr=0.1)

    rng = np.random.default_rng(seed)
    x_np = rng.integers(0, V, size=(T, B))
    y_np = rng.integers(0, V, size=(T, B))
    tx, ty = torch.from_numpy(x_np), torch.from_numpy(y_np.reshape(-1))
    hx, hy = handgrad.tensor(x_np), handgrad.tensor(y_np.reshape(-1))

    def torch_train() -> float:
        t_opt.zero_grad()
        out, _ = t_rnn(t_emb(tx))
        loss = torch.nn.functional.cross_entropy(t_head(out).reshape(-1, V), ty)
        loss.backward()
        t_opt.step()
        return float(loss.detach())

    def hg_train() -> float:
        h_opt.zero_grad()
        out, _ = h_rnn(F.embedding(hx, h_emb))
        logits = F.linear(out.reshape(T * B, H), h_w, h_b)
        loss = F.cross_entropy(logits, hy)
        loss.backward()
        h_opt.step()
        return float(loss.item())

    def torch_fwd() -> float:
        with torch.no_grad():
            out, _ = t_rnn(t_emb(tx))
        return float(out[-1, 0, 0])

    def hg_fwd() -> float:
        with handgrad.no_grad():
            out, _ = h_rnn(F.embedding(hx, h_emb))
        return float(out.data[-1, 0, 0])

    return (hg_train, torch_train), (hg_fwd, torch_fwd)


def compare(hg, th, repeat: int) -> dict[str, float]:
    """Alternate single steps (order flipped every pair). Returns the median wall time of each framework, the
    median of the per-pair wall ratios, and the same for process CPU time: on a shared machine the CPU time
    (what the step itself consumed) is far less disturbed by other processes than the wall time."""
    for _ in range(2):  # warm up both (allocations, BLAS threads)
        hg()
        th()
    res: dict[str, list[float]] = {k: [] for k in ("hg", "th", "hg_cpu", "th_cpu", "ratio", "ratio_cpu")}
    for i in range(repeat):
        pair = {}
        for name, f in ((("hg", hg), ("th", th)) if i % 2 == 0 else (("th", th), ("hg", hg))):
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            pair[name] = time.perf_counter() - t0
            pair[name + "_cpu"] = time.process_time() - c0
        for k, v in pair.items():
            res[k].append(v)
        res["ratio"].append(pair["hg"] / pair["th"])
        res["ratio_cpu"].append(pair["hg_cpu"] / max(pair["th_cpu"], 1e-9))
    return {k: float(np.median(v)) for k, v in res.items()}


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    T, B, H = ARGS.T, ARGS.B, ARGS.hidden
    print(f"char-LM T={T} B={B} vocab={V} embedding={E} hidden={H}; threads={ARGS.threads} "
          f"(torch {torch.__version__}, numpy {np.__version__}); {ARGS.repeat} interleaved steps, medians")
    print(f"{'case':<12} {'handgrad ms':>12} {'torch ms':>10} {'ratio':>7} {'pair-ratio':>11}   "
          f"{'hg cpu ms':>10} {'torch cpu ms':>13} {'cpu ratio':>10} {'cpu pair-ratio':>15}")
    for case in ARGS.cases.split(","):
        kind, what = case.split("-")
        train, fwd = build(kind, T, B, H)
        if what == "train":
            lh, lt = train[0](), train[1]()  # same weights, same batch: the same loss
            assert abs(lh - lt) < 1e-4 * abs(lt), (lh, lt)
            r = compare(*train, ARGS.repeat)
        else:
            r = compare(*fwd, ARGS.repeat)
        print(f"{case:<12} {r['hg'] * 1e3:>12.1f} {r['th'] * 1e3:>10.1f} {r['hg'] / r['th']:>7.2f} "
              f"{r['ratio']:>11.2f}   {r['hg_cpu'] * 1e3:>10.1f} {r['th_cpu'] * 1e3:>13.1f} "
              f"{r['hg_cpu'] / r['th_cpu']:>10.2f} {r['ratio_cpu']:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
