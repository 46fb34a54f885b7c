"""Selective search: recall at IoU 0.5 vs number of proposals, and time per image, on the test scenes;
handgrad's (from scratch) side by side with OpenCV's ``createSelectiveSearchSegmentation`` (a bench extra:
``pip install opencv-contrib-python-headless``), both in their "fast" mode on one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_selective_search.py [--scenes 20] [--png recall.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handgrad.data.scenes import DetectionScenes  # noqa: E402
from handgrad.vision.ops import box_iou  # noqa: E402
from handgrad.vision.proposals import selective_search  # noqa: E402

COUNTS = (50, 100, 200, 300, 500, 1000, 2000)


def opencv_proposals(img: np.ndarray, cv2) -> np.ndarray:
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))
    ss.switchToSelectiveSearchFast()
    r = ss.process().astype(np.float64).reshape(-1, 4)
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], 1)


def recall_curve(gt: list[np.ndarray], props: list[np.ndarray]) -> dict[int, float]:
    out = {}
    for n in COUNTS:
        hit = tot = 0
        for g, p in zip(gt, props):
            tot += len(g)
            if len(g) and len(p):
                hit += int((box_iou(g, p[:n]).max(1) >= 0.5).sum())
        out[n] = hit / max(1, tot)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--mode", default="fast")
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    ds = DetectionScenes("test", size=args.scenes)
    imgs = [ds[i][0] for i in range(args.scenes)]
    gt = [ds[i][1]["boxes"].astype(np.float64) for i in range(args.scenes)]
    selective_search(imgs[0][:32, :32].copy(), "single")  # compile (or load the numba cache) first
    rows = {}
    t = time.perf_counter()
    ours = [selective_search(im, args.mode) for im in imgs]
    rows["handgrad"] = (recall_curve(gt, ours), (time.perf_counter() - t) / len(imgs), np.mean([len(p) for p in ours]))
    try:
        import cv2

        cv2.setNumThreads(1)
        t = time.perf_counter()
        theirs = [opencv_proposals(im, cv2) for im in imgs]
        rows["OpenCV"] = (recall_curve(gt, theirs), (time.perf_counter() - t) / len(imgs),
                          np.mean([len(p) for p in theirs]))
    except ImportError:
        print("OpenCV (opencv-contrib-python-headless) not installed: handgrad only")
    head = " ".join(f"R@{n:<5}" for n in COUNTS)
    print(f"{args.scenes} test scenes, mode {args.mode}; recall at IoU 0.5 vs number of proposals")
    print(f"{'':10} {head} {'s/img':>7} {'#props':>7}")
    for name, (rc, sec, nprop) in rows.items():
        print(f"{name:10} " + " ".join(f"{rc[n]:<7.3f}" for n in COUNTS) + f" {sec:>7.2f} {nprop:>7.0f}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        for name, (rc, _, _) in rows.items():
            ax.plot(COUNTS, [rc[n] for n in COUNTS], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("proposals per image")
        ax.set_ylabel("recall (IoU >= 0.5)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)


if __name__ == "__main__":
    main()
