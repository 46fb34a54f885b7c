"""Time per test image of the trained R-CNN and Fast R-CNN detectors, interleaved in one process so that
both see the same machine load: selective search ("fast"), R-CNN's detector and Fast R-CNN's detector
on the same proposals (top 2,000), image by image.

    OMP_NUM_THREADS=1 python benchmarks/bench_detectors.py runs/rcnn-scenes runs/fast-rcnn-scenes [--images 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handgrad.cli.detect import load_detector  # noqa: E402
from handgrad.data.scenes import DetectionScenes  # noqa: E402
from handgrad.vision.proposals import selective_search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rcnn")
    ap.add_argument("fast_rcnn")
    ap.add_argument("--images", type=int, default=10)
    args = ap.parse_args()
    ds = DetectionScenes("test", size=args.images)
    # the loaded detectors run selective search themselves; time it apart by handing them the precomputed set
    import handgrad.vision.proposals as vp

    props: dict[int, np.ndarray] = {}
    current = {"i": 0}
    real = selective_search

    def cached(img: np.ndarray, mode: str = "fast") -> np.ndarray:
        return props[current["i"]]

    vp.selective_search = cached  # load_detector imports it from here when it builds the detectors
    rc, _ = load_detector(args.rcnn)
    fr, _ = load_detector(args.fast_rcnn)
    t_ss, t_rc, t_fr = [], [], []
    for i in range(args.images):
        img = ds[i][0]
        t = time.perf_counter()
        props[i] = real(img, "fast", seed=i)[:2000]
        t_ss.append(time.perf_counter() - t)
        current["i"] = i
        for fn, acc in ((rc, t_rc), (fr, t_fr)) if i % 2 == 0 else ((fr, t_fr), (rc, t_rc)):
            t = time.perf_counter()
            fn(img)
            acc.append(time.perf_counter() - t)
    ss, r, f = (float(np.median(x)) for x in (t_ss, t_rc, t_fr))
    print(f"{args.images} test images, median seconds per image (interleaved):")
    print(f"selective search {ss:.3f} | R-CNN detector {r:.3f} | Fast R-CNN detector {f:.3f} | "
          f"ratio {r / f:.1f}x (detector only), {(r + ss) / (f + ss):.1f}x (with selective search)")


if __name__ == "__main__":
    main()
