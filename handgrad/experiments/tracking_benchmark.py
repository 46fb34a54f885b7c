"""``handgrad run tracking-benchmark``: every tracker on the generated OTB-style benchmark and on ViSP's mire-2.

One-pass evaluation (OTB): each tracker starts from the ground-truth box of frame 1 and runs to the end;
precision at 20 px and success AUC over the frames where the object is visible, averaged over sequences,
overall and per attribute (SV, IV, OCC, FM, IPR, BC, DIS); frames per second of ``init`` + ``update`` only
(the rendering of the generated frames is not timed). Trackers:

* ``kcf`` (grey pixels) and ``kcf-hog`` (31-channel HOG): :class:`handgrad.tracking.KCF`;
* ``search-cnn`` and ``siamrpn``: the learned trackers, with the weights that ``handgrad run tracking-train``
  writes (``--weights-dir``; skipped, and said so, when absent);
* ``opencv-kcf``: OpenCV's ``cv2.TrackerKCF_create()`` with its defaults (grey + colour names), a peer from
  the ``bench`` extra (``opencv-contrib-python-headless``), run on the same frames in the same process when
  installed, on one thread like handgrad's trackers. It is never a run-time dependency.

Targets (issue 15): ``kcf-hog`` at least OpenCV KCF's precision at 20 px and its fps; ``siamrpn`` above
KCF-HOG's success AUC on the scale-variation and occlusion sequences. ``results.json`` says which are met.

Outputs: ``results.md`` (the table), ``precision.png`` / ``success.png`` (OTB plots), ``attributes.png``
(success plot per attribute), ``mire2_precision.png`` / ``mire2_success.png`` (when mire-2 is installed).
``--otb DIR`` evaluates your own OTB-format sequences instead of the generated ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from handgrad.data.otb import SequenceError, TrackingSequence, load_mire2, load_otb
from handgrad.data.tracking_sequences import BENCHMARK_TAGS, make_benchmark
from handgrad.errors import ExperimentError
from handgrad.metrics.tracking import (
    SequenceResult,
    aggregate,
    evaluate_sequence,
    plot_attributes,
    plot_precision,
    plot_success,
)
from handgrad.tracking import create_tracker

try:  # the bench extra's peer; never needed to run handgrad's own trackers
    import cv2
except ImportError:  # pragma: no cover - depends on the install
    cv2 = None

ALL_TRACKERS = ("kcf", "kcf-hog", "search-cnn", "siamrpn", "opencv-kcf")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trackers", default=",".join(ALL_TRACKERS),
                   help=f"comma-separated subset of {','.join(ALL_TRACKERS)} (default all)")
    p.add_argument("--sequences", type=int, default=None, help="generated sequences (default 32)")
    p.add_argument("--min-frames", type=int, default=None, help="shortest generated sequence (default 100)")
    p.add_argument("--max-frames", type=int, default=None, help="longest generated sequence (default 300)")
    p.add_argument("--mire2-frames", type=int, default=None, help="frames of mire-2 used (default all 501; 0: skip)")
    p.add_argument("--weights-dir", default=os.path.join("runs", "tracking-train"),
                   help="folder with search_cnn.safetensors / siamrpn.safetensors (default runs/tracking-train)")
    p.add_argument("--otb", default=None, metavar="DIR",
                   help="evaluate your own OTB-format sequences in DIR instead of the generated benchmark")


class OpenCVKCF:
    """``cv2.TrackerKCF_create()`` behind the same protocol (RGB frames in; the BGR copy is made by the caller
    outside the timed region via :meth:`prepare`). On a reported loss the last box is kept."""

    def __init__(self) -> None:
        cv2.setNumThreads(1)  # like handgrad's trackers: one thread each
        self._t = cv2.TrackerKCF_create()
        self._box = (0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def prepare(frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame[:, :, ::-1])

    def init(self, frame: np.ndarray, box: Any) -> bool:
        x, y, w, h = (int(round(v)) for v in box)
        self._box = (float(x), float(y), float(w), float(h))
        r = self._t.init(frame, (x, y, max(w, 1), max(h, 1)))
        return True if r is None else bool(r)

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, float, float, float]]:
        ok, box = self._t.update(frame)
        if ok:
            self._box = tuple(float(v) for v in box)
        return bool(ok), self._box


def _opencv_available() -> bool:
    return cv2 is not None and hasattr(cv2, "TrackerKCF_create")


def _factory(name: str, weights_dir: str) -> Any:
    if name == "opencv-kcf":
        return OpenCVKCF
    weights = None
    if name in ("search-cnn", "siamrpn"):
        weights = os.path.join(weights_dir, name.replace("-", "_") + ".safetensors")
        create_tracker(name, weights)  # load once now: a bad file fails before the long loop
    return lambda: create_tracker(name, weights)


def run_tracker(make: Any, frames: list[np.ndarray], first_box: np.ndarray) -> tuple[np.ndarray, float]:
    """One-pass run: ``(boxes (N, 4), seconds of init + updates)``; frame 0's box is the given one."""
    tracker = make()
    prep = getattr(tracker, "prepare", None)
    inputs = [prep(f) for f in frames] if prep else frames
    boxes = np.zeros((len(frames), 4))
    boxes[0] = first_box
    t0 = time.perf_counter()
    tracker.init(inputs[0], tuple(float(v) for v in first_box))
    for k in range(1, len(frames)):
        _, b = tracker.update(inputs[k])
        boxes[k] = b
    return boxes, time.perf_counter() - t0


def _evaluate(trackers: dict[str, Any], seqs: list[TrackingSequence], desc: str, progress: bool | None,
              max_frames: int | None = None) -> dict[str, list[SequenceResult]]:
    out: dict[str, list[SequenceResult]] = {n: [] for n in trackers}
    quiet = progress is False or (progress is None and not sys.stderr.isatty())
    for seq in tqdm(seqs, desc=desc, disable=quiet, unit="seq"):
        n = len(seq) if max_frames is None else min(len(seq), max_frames)
        frames = [seq[k] for k in range(n)]  # rendered once, shared by every tracker
        gt = seq.boxes[:n]
        vis = None if seq.visible is None else seq.visible[:n]
        for name, make in trackers.items():
            boxes, secs = run_tracker(make, frames, gt[0])
            out[name].append(evaluate_sequence(boxes, gt, vis, seq.name, seq.attributes, fps=n / secs))
    return out


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def run(opts: argparse.Namespace) -> dict[str, Any]:
    names = [t.strip() for t in opts.trackers.split(",") if t.strip()]
    bad = [t for t in names if t not in ALL_TRACKERS]
    if bad or not names:
        raise ExperimentError(f"--trackers: unknown {bad or names}; choose from {','.join(ALL_TRACKERS)}")
    skipped: dict[str, str] = {}
    trackers: dict[str, Any] = {}
    for name in names:
        if name == "opencv-kcf" and not _opencv_available():
            skipped[name] = "opencv-contrib-python-headless is not installed (pip install -e '.[bench]')"
            continue
        if name in ("search-cnn", "siamrpn"):
            w = os.path.join(opts.weights_dir, name.replace("-", "_") + ".safetensors")
            if not os.path.isfile(w):
                skipped[name] = f"no trained weights at {w} (handgrad run tracking-train)"
                continue
        try:
            trackers[name] = _factory(name, opts.weights_dir)
        except (ValueError, OSError, KeyError) as e:
            raise ExperimentError(f"{name}: cannot load its weights: {e}") from e
    for name, why in skipped.items():
        print(f"tracking-benchmark: skipping {name}: {why}", file=sys.stderr)
    if not trackers:
        raise ExperimentError("no tracker left to run")

    if opts.otb:
        try:
            seqs = load_otb(opts.otb)
        except SequenceError as e:
            raise ExperimentError(f"--otb: {e}") from e
        source = f"OTB folders in {opts.otb}"
    else:
        for k in ("sequences", "min_frames", "max_frames"):
            if getattr(opts, k) < 1:
                raise ExperimentError(f"--{k.replace('_', '-')} must be positive")
        if opts.min_frames > opts.max_frames:
            raise ExperimentError("--min-frames must not exceed --max-frames")
        seqs = make_benchmark(opts.sequences, opts.seed, opts.min_frames, opts.max_frames)
        source = f"generated benchmark: {len(seqs)} sequences, seed {opts.seed}"
    print(f"tracking-benchmark: {source}, {sum(len(s) for s in seqs)} frames; trackers: {', '.join(trackers)}")
    per = _evaluate(trackers, seqs, "sequences", opts.progress)

    mire = None
    if opts.mire2_frames:
        try:
            m = load_mire2(max_frames=opts.mire2_frames)
            mire = _evaluate(trackers, [m], "mire-2", opts.progress, opts.mire2_frames)
        except SequenceError as e:
            print(f"tracking-benchmark: skipping mire-2: {e}", file=sys.stderr)

    # -- tables and plots ----------------------------------------------------------------------------------
    first = next(iter(per.values()))
    attrs = [a for a in BENCHMARK_TAGS if aggregate(first, a)["sequences"] > 0]  # with a scored sequence
    summary: dict[str, Any] = {}
    for name, rs in per.items():
        a = aggregate(rs)
        row = {"precision20": a["precision20"], "auc": a["auc"], "fps": a["fps"],
               "attributes": {t: {k: aggregate(rs, t)[k] for k in ("precision20", "auc", "sequences")}
                              for t in attrs}}
        if mire is not None:
            m = aggregate(mire[name])
            row["mire2"] = {"precision20": m["precision20"], "auc": m["auc"], "fps": m["fps"],
                            "frames": mire[name][0].frames}
        summary[name] = row
    plot_precision({n: aggregate(rs)["precision"] for n, rs in per.items()}, os.path.join(opts.out, "precision.png"))
    plot_success({n: aggregate(rs)["success"] for n, rs in per.items()}, os.path.join(opts.out, "success.png"))
    plot_attributes({t: {n: aggregate(rs, t)["success"] for n, rs in per.items()} for t in attrs},
                    os.path.join(opts.out, "attributes.png"),
                    {t: aggregate(first, t)["sequences"] for t in attrs})
    if mire is not None:
        plot_precision({n: rs[0].precision for n, rs in mire.items()}, os.path.join(opts.out, "mire2_precision.png"),
                       "Precision plot, ViSP mire-2")
        plot_success({n: rs[0].success for n, rs in mire.items()}, os.path.join(opts.out, "mire2_success.png"),
                     "Success plot, ViSP mire-2")

    head = ["tracker", "P@20", "AUC", "fps", *[f"AUC {t}" for t in attrs]]
    if mire is not None:
        head += ["mire-2 P@20", "mire-2 AUC", "mire-2 fps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in sorted(summary.items(), key=lambda kv: -kv[1]["auc"]):
        cells = [name, _fmt(row["precision20"]), _fmt(row["auc"]), _fmt(row["fps"], 0),
                 *[_fmt(row["attributes"][t]["auc"]) for t in attrs]]
        if mire is not None:
            cells += [_fmt(row["mire2"]["precision20"]), _fmt(row["mire2"]["auc"]), _fmt(row["mire2"]["fps"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    targets = _targets(summary)
    table = "\n".join(lines)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(f"# tracking-benchmark\n\n{source}; one-pass evaluation; fps = init + update only.\n\n{table}\n\n")
        for k, v in targets.items():
            f.write(f"- {k}: {v}\n")
        for k, v in skipped.items():
            f.write(f"- skipped {k}: {v}\n")
    print(table)
    for k, v in targets.items():
        print(f"target {k}: {v}")
    per_sequence = {n: [{"name": r.name, "precision20": r.precision20, "auc": r.auc, "fps": r.fps}
                        for r in rs] for n, rs in per.items()}
    return {"source": source, "trackers": summary, "targets": targets, "skipped": skipped,
            "sequences": len(seqs), "frames": int(sum(len(s) for s in seqs)), "per_sequence": per_sequence}


def _targets(summary: dict[str, Any]) -> dict[str, str]:
    out = {}
    hog, cv = summary.get("kcf-hog"), summary.get("opencv-kcf")
    if hog and cv:
        out["kcf-hog P@20 >= opencv-kcf"] = (f"{'met' if hog['precision20'] >= cv['precision20'] else 'MISSED'} "
                                             f"({hog['precision20']:.3f} vs {cv['precision20']:.3f})")
        out["kcf-hog fps >= opencv-kcf"] = (f"{'met' if hog['fps'] >= cv['fps'] else 'MISSED'} "
                                            f"({hog['fps']:.0f} vs {cv['fps']:.0f} fps)")
        if "mire2" in hog and "mire2" in cv:
            out["mire-2: kcf-hog fps >= opencv-kcf"] = (
                f"{'met' if hog['mire2']['fps'] >= cv['mire2']['fps'] else 'MISSED'} "
                f"({hog['mire2']['fps']:.0f} vs {cv['mire2']['fps']:.0f} fps on 384x288)")
    rpn = summary.get("siamrpn")
    if rpn and hog:
        for t in ("SV", "OCC"):
            if t in rpn["attributes"]:
                a, b = rpn["attributes"][t]["auc"], hog["attributes"][t]["auc"]
                out[f"siamrpn AUC {t} > kcf-hog"] = f"{'met' if a > b else 'MISSED'} ({a:.3f} vs {b:.3f})"
    return out
