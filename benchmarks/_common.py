"""Shared protocol of the handgrad-vs-PyTorch speed benchmarks (``bench_lenet``, ``bench_rnn``, ``bench_resblock``).

* ``machine_report()``: the CPU model, the load average, the library versions and every thread pool that
  threadpoolctl sees (for the BLAS: its library, kernel architecture and thread count), so a number is never
  quoted without the machine it came from.
* ``set_threads(n)``: the same thread count on both sides: NumPy's own BLAS (only that pool) through
  threadpoolctl, PyTorch through ``torch.set_num_threads``.
* ``compare_blocks(hg, th)``: alternate BLOCKS of steps (``block`` of one library, then ``block`` of the
  other, the order flipped every round). Alternating single steps distorts both sides at 2 threads: each
  library's idle pool threads spin while the other runs. Within a block, the first step after the switch is
  not timed (it pays the other library's wake-up). Returns per-library medians of wall and CPU time and the
  median over rounds of the per-round ratio of block medians.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_report() -> str:
    """Several lines describing the machine, the load and the thread pools (call after importing torch)."""
    from threadpoolctl import threadpool_info

    lines = [f"cpu: {cpu_model()} ({os.cpu_count()} logical cores); load average {os.getloadavg()[0]:.1f} "
             f"(1 min) {os.getloadavg()[1]:.1f} (5 min)"]
    vers = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import torch

        vers.append(f"torch {torch.__version__} (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'})")
    except ImportError:
        pass
    try:
        import numba

        vers.append(f"numba {numba.__version__}")
    except ImportError:
        vers.append("numba absent")
    lines.append("versions: " + ", ".join(vers))
    for p in threadpool_info():
        extra = "".join(f" {k}={p[k]}" for k in ("version", "architecture", "threading_layer") if p.get(k))
        lines.append(f"pool: {p['user_api']}/{p['internal_api']} ({p['prefix']}) num_threads={p['num_threads']}{extra}")
    return "\n".join(lines)


_limits: Any = None


def set_threads(n: int) -> None:
    """``n`` threads for NumPy's BLAS (threadpoolctl) and PyTorch (``torch.set_num_threads``)."""
    global _limits
    from threadpoolctl import ThreadpoolController

    # Only NumPy's own BLAS (numpy.libs): limiting every pool (PyTorch's OpenMP and its bundled OpenBLAS too)
    # made PyTorch's 1-thread LeNet step ~4x slower in CPU time; PyTorch gets torch.set_num_threads instead.
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    ctl = ThreadpoolController()
    mine = [lib for lib in ctl.lib_controllers if lib.user_api == "blas" and
            (lib.filepath.startswith(numpy_libs) or os.sep + "numpy" + os.sep in lib.filepath)]
    for lib in mine:
        lib.set_num_threads(n)
    _limits = mine
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    # numba's thread count is left alone: calling numba.set_num_threads starts its OpenMP pool, and the default
    # kernels are serial numba code. handgrad's CNN ops read the
    # NumPy-BLAS setting made here and split their batch over that many Python threads (functional/_threads.py)


def compare_blocks(hg: Callable[[], Any], th: Callable[[], Any] | None, block: int = 10, rounds: int = 4,
                   warmup: int = 2) -> dict[str, float]:
    """Time ``hg`` and ``th`` in alternating blocks; medians of wall (``hg``, ``th``) and CPU time (``*_cpu``),
    the ratio of medians (``ratio``, ``ratio_cpu``) and the median per-round ratio (``round_ratio``)."""
    for _ in range(warmup):
        hg()
        if th is not None:
            th()
    res: dict[str, list[float]] = {"hg": [], "th": [], "hg_cpu": [], "th_cpu": []}
    round_ratios = []
    sides = [("hg", hg)] + ([("th", th)] if th is not None else [])
    for r in range(rounds):
        med = {}
        for name, f in (sides if r % 2 == 0 else sides[::-1]):
            f()  # untimed: the first step after a switch pays for waking this library's threads
            walls = []
            for _ in range(block):
                c0, t0 = time.process_time(), time.perf_counter()
                f()
                walls.append(time.perf_counter() - t0)
                res[name + "_cpu"].append(time.process_time() - c0)
            res[name].extend(walls)
            med[name] = float(np.median(walls))
        if th is not None:
            round_ratios.append(med["hg"] / med["th"])
    out = {k: float(np.median(v)) if v else float("nan") for k, v in res.items()}
    out["ratio"] = out["hg"] / out["th"] if th is not None else float("nan")
    out["ratio_cpu"] = out["hg_cpu"] / out["th_cpu"] if th is not None else float("nan")
    out["round_ratio"] = float(np.median(round_ratios)) if round_ratios else float("nan")
    out["hg_min"] = min(res["hg"])
    out["th_min"] = min(res["th"]) if res["th"] else float("nan")
    return out


HEADER = (f"{'case':<14} {'thr':>3} {'handgrad ms':>11} {'torch ms':>9} {'ratio':>6} {'round-ratio':>11}   "
          f"{'hg cpu ms':>9} {'th cpu ms':>9} {'cpu ratio':>9}")


def row(case: str, threads: int, r: dict[str, float]) -> str:
    return (f"{case:<14} {threads:>3} {r['hg'] * 1e3:>11.2f} {r['th'] * 1e3:>9.2f} {r['ratio']:>6.2f} "
            f"{r['round_ratio']:>11.2f}   {r['hg_cpu'] * 1e3:>9.2f} {r['th_cpu'] * 1e3:>9.2f} {r['ratio_cpu']:>9.2f}")


def check_losses(name: str, lh: float, lt: float, rtol: float = 1e-4) -> None:
    """Same weights and data: the first-step losses must agree (we time the same computation)."""
    if abs(lh - lt) > rtol * max(1.0, abs(lt)):
        raise SystemExit(f"{name}: first-step losses differ: handgrad {lh:.6f} vs torch {lt:.6f}")
    print(f"{name}: first-step loss handgrad {lh:.6f} = torch {lt:.6f}")


def compiled_vs_numpy(make_model: Callable[[], Callable[[], float]]) -> tuple[Callable[[], float], Callable[[], float]]:
    """``--vs-numpy``: two identical handgrad models (``make_model()`` builds one step function each); the
    first steps with the compiled (numba) kernels, the second with the NumPy fallback. Returned in the
    (handgrad, torch) slots of ``compare_blocks``; their first losses are checked equal."""
    from handgrad.functional.rnn import _kernels

    on, off = make_model(), make_model()

    def compiled() -> float:
        _kernels.ENABLED = True
        return on()

    def numpy_path() -> float:
        _kernels.ENABLED = False
        return off()

    check_losses("compiled vs numpy", compiled(), numpy_path())
    print("NOTE: 'torch' columns below are handgrad's NumPy fallback (--vs-numpy)")
    return compiled, numpy_path
