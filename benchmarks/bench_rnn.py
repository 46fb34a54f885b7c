"""Char-LM training step and inference forward: handgrad's fused LSTM/GRU vs ``torch.nn.LSTM``/``GRU`` on the
CPU, in the same process, with the same thread count and the same weights.

The step: T=100, B=32 token ids over a 65-symbol alphabet -> embedding 64 -> one recurrent layer of
hidden 256 -> linear to 65 -> cross-entropy over all T*B positions -> backward -> SGD. The first-step losses
are checked equal. At each thread count of ``--threads`` (threadpoolctl for NumPy's BLAS,
``torch.set_num_threads``), the two frameworks alternate in blocks of ``--block`` steps for ``--rounds``
rounds (``_common.compare_blocks``: single-step alternation distorts both sides at 2 threads); we print the
median step time of each, their ratio and the median per-round ratio.

    python benchmarks/bench_rnn.py [--threads 1,2] [--block 5] [--rounds 4] [--cases lstm-train,gru-train,...]

``--cases lstm-floor`` (not in the default set) times, on the handgrad side, only the GEMMs that any
step-by-step LSTM forward on NumPy's BLAS must do (the input projection of all T steps and T recurrent
``(B, H) x (H, 4H)`` GEMMs, no gate math at all) against PyTorch's whole no-grad LSTM forward: the floor of
the ``lstm-fwd`` ratio. The GEMMs are the ones the no-grad forward runs: ``_kernels.gemm_packed`` on weights
packed once (float32), or NumPy's BLAS with ``HANDGRAD_PACKED_GEMM=0``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CASES = ("lstm-train", "gru-train", "lstm-fwd", "gru-fwd")  # and "lstm-floor" on request


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=5, help="steps per block (one framework at a time)")
    p.add_argument("--rounds", type=int, default=4, help="blocks per framework (order flipped every round)")
    p.add_argument("--threads", default="1,2", help="comma-separated BLAS / intra-op thread counts")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    return p.parse_args()


ARGS = _parse()

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from _common import HEADER, check_losses, compare_blocks, machine_report, row, set_threads  # noqa: E402

import handgrad  # noqa: E402
import handgrad.functional as F  # noqa: E402
from handgrad import nn  # noqa: E402
from handgrad.functional.rnn import _kernels  # noqa: E402
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
        return float(out.array[-1, 0, 0])

    def gemm_floor() -> float:
        w_ih = h_rnn.weight_ih_l0.array
        w_hh_t = np.ascontiguousarray(h_rnn.weight_hh_l0.array.T)
        x2 = F.embedding(hx, h_emb).array.reshape(T * B, E)
        h = np.zeros((B, H), np.float32)
        r = np.empty((B, w_hh_t.shape[1]), np.float32)
        if _kernels.packable(np, w_hh_t):  # the GEMM route the no-grad forward takes (HANDGRAD_PACKED_GEMM)
            S = np.empty((T * B, w_ih.shape[0]), np.float32)
            _kernels.gemm_packed(x2, _kernels.pack_columns(w_ih.T), S)
            packed = _kernels.pack_columns(w_hh_t)
            for _ in range(T):
                _kernels.gemm_packed(h, packed, r)
            return float(S[-1, 0] + r[0, 0])
        S = np.matmul(x2, w_ih.T)
        for _ in range(T):  # the values do not change a GEMM's time
            np.matmul(h, w_hh_t, out=r)
        return float(S[-1, 0] + r[0, 0])

    if kind == "lstm":
        hg_fwd.floor = gemm_floor
    return (hg_train, torch_train), (hg_fwd, torch_fwd)


def main() -> None:
    T, B, H = ARGS.T, ARGS.B, ARGS.hidden
    print(machine_report())
    print(f"char-LM T={T} B={B} vocab={V} embedding={E} hidden={H}; blocks of {ARGS.block} steps x "
          f"{ARGS.rounds} rounds each side, medians")
    print(HEADER)
    threads = [int(v) for v in ARGS.threads.split(",")]
    for case in ARGS.cases.split(","):
        kind, what = case.split("-")
        train, fwd = build(kind, T, B, H)
        if what == "train":
            check_losses(f"bench_rnn {case}", train[0](), train[1]())
        pair = train if what == "train" else (fwd[0].floor, fwd[1]) if what == "floor" else fwd
        for n in threads:
            set_threads(n)
            r = compare_blocks(*pair, ARGS.block, ARGS.rounds)
            print(row(case, n, r), flush=True)


if __name__ == "__main__":
    main()
