"""NMS of 2,000 boxes: handgrad's ``nms`` (numba, one core) vs OpenCV's ``cv2.dnn.NMSBoxes``, same boxes.

Boxes are 2,000 random boxes of 8..96 px in a 256x256 image (a dense proposal set, the case of R-CNN and
the RPN); reported: median and best time over ``--repeat`` calls at IoU thresholds 0.3/0.5/0.7, the number
kept, and whether OpenCV keeps the same boxes (OpenCV is a bench extra:
``pip install opencv-contrib-python-headless``).

    OMP_NUM_THREADS=1 python benchmarks/bench_nms.py [--n 2000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handgrad.vision.ops import nms  # noqa: E402


def _time(fn, repeat: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, float(np.min(ts)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        cv2 = None
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 240, (args.n, 2))
    wh = rng.uniform(8, 96, (args.n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.random(args.n)
    nms(boxes[:5], scores[:5], 0.5)  # compile (or load the numba cache) outside the timing
    print(f"{'IoU thr':>8} {'kept':>6} {'handgrad ms (median/best)':>26} {'OpenCV ms (median/best)':>24} same")
    for thr in (0.3, 0.5, 0.7):
        keep = nms(boxes, scores, thr)
        hg = _time(lambda thr=thr: nms(boxes, scores, thr), args.repeat)
        cv_s, same = "-", "-"
        if cv2 is not None:
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
            sc = scores.tolist()
            ck = np.asarray(cv2.dnn.NMSBoxes(xywh, sc, 0.0, thr)).ravel()
            cvt = _time(lambda thr=thr, xywh=xywh, sc=sc: cv2.dnn.NMSBoxes(xywh, sc, 0.0, thr), args.repeat)
            cv_s = f"{cvt[0]:.2f} / {cvt[1]:.2f}"
            same = "yes" if sorted(ck.tolist()) == sorted(keep.tolist()) else f"no ({len(ck)} kept)"
        print(f"{thr:>8} {len(keep):>6} {hg[0]:>12.2f} / {hg[1]:<11.2f} {cv_s:>24} {same}")


if __name__ == "__main__":
    main()
