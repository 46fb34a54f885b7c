"""Frames per second of handgrad's KCF against OpenCV's ``TrackerKCF`` on the same frames, on a busy machine.

Both trackers run in the same process on one thread each, **alternating frame by frame** (ours, then
OpenCV's, on the same frame), so that the machine's load hits both alike; each configuration is repeated
``--repeats`` times and the fastest pass counts (the run least disturbed by other jobs). Sequences: ViSP's
mire-2 (384x288, a 64x46 target) and generated benchmark sequences (320x240). Reported: fps of
``update`` (plus ``init``), for KCF-HOG with its 3-scale search, KCF-HOG without it (one scale, as OpenCV's
KCF), grey KCF, and OpenCV's KCF (grey + colour names, its defaults).

    python benchmarks/bench_kcf.py [--frames 200] [--repeats 3] [--sequences 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cv2  # noqa: E402

from handgrad.data.otb import load_mire2  # noqa: E402
from handgrad.data.tracking_sequences import make_benchmark  # noqa: E402
from handgrad.tracking import KCF  # noqa: E402

CONFIGS = {
    "kcf-hog (3 scales)": lambda: KCF("hog"),
    "kcf-hog (1 scale)": lambda: KCF("hog", num_scales=1),
    "kcf (grey)": lambda: KCF("gray"),
}


def _pass(make, frames, bgr, box):
    """One alternating pass: returns (seconds ours, seconds OpenCV)."""
    ours, peer = make(), cv2.TrackerKCF_create()
    ib = tuple(int(round(v)) for v in box)
    t = [0.0, 0.0]
    t0 = time.perf_counter()
    ours.init(frames[0], box)
    t1 = time.perf_counter()
    peer.init(bgr[0], ib)
    t2 = time.perf_counter()
    t[0] += t1 - t0
    t[1] += t2 - t1
    for f, b in zip(frames[1:], bgr[1:]):
        t0 = time.perf_counter()
        ours.update(f)
        t1 = time.perf_counter()
        peer.update(b)
        t2 = time.perf_counter()
        t[0] += t1 - t0
        t[1] += t2 - t1
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sequences", type=int, default=3, help="generated sequences (besides mire-2)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seqs = []
    try:
        m = load_mire2()
        seqs.append(("mire-2 384x288", [m[k] for k in range(min(args.frames, len(m)))], m.boxes[0]))
    except Exception as e:  # noqa: BLE001 - optional data
        print(f"(mire-2 skipped: {e})")
    for s in make_benchmark(args.sequences, min_frames=args.frames, max_frames=args.frames):
        seqs.append((f"{s.name} 320x240", [s[k] for k in range(len(s))], s.boxes[0]))
    print(f"{'sequence':32s} {'configuration':20s} {'ours fps':>9s} {'OpenCV fps':>11s} {'ratio':>6s}")
    for name, frames, box in seqs:
        bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]
        for cname, make in CONFIGS.items():
            best = None
            for _ in range(args.repeats):
                t = _pass(make, frames, bgr, tuple(float(v) for v in box))
                best = t if best is None else [min(a, b) for a, b in zip(best, t)]
            fo, fc = len(frames) / best[0], len(frames) / best[1]
            print(f"{name:32s} {cname:20s} {fo:9.0f} {fc:11.0f} {fo / fc:6.2f}")


if __name__ == "__main__":
    main()
