"""Helpers shared by the detection experiments (R-CNN, Fast R-CNN): cached selective-search proposals,
object/background crops for pre-training, RoI labelling by IoU, evaluation with timing, the result table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
from PIL import Image
from tqdm import tqdm

import handgrad.functional as F
from handgrad.data import DataLoader, TensorDataset
from handgrad.data._paths import data_dir
from handgrad.data.scenes import DetectionScenes, draw_detections
from handgrad.errors import ExperimentError
from handgrad.metrics.detection import eval_detection_coco, eval_detection_voc, plot_pr_curves
from handgrad.optim import Adam
from handgrad.serialization import load, load_into, save
from handgrad.train import Trainer
from handgrad.vision.models import CropClassifier
from handgrad.vision.models.backbone import normalize_image
from handgrad.vision.models.rcnn import warp_regions
from handgrad.vision.ops import box_iou
from handgrad.vision.proposals import selective_search

normalize = normalize_image  # uint8 (H, W, 3) -> standardised float32 (3, H, W)
warp = warp_regions  # R-CNN's warp of boxes to size x size crops


def _progress(it: Any, total: int, desc: str) -> Any:
    if sys.stderr.isatty():
        return tqdm(it, total=total, desc=desc, leave=False)
    return it


def proposals(ds: DetectionScenes, i: int, mode: str = "fast", top: int = 2000) -> numpy.ndarray:
    """Selective-search proposals of scene ``i`` (at most ``top``), cached under the handgrad data dir by
    split, seed, mode and index (the scenes are deterministic, so the cache is too)."""
    d = data_dir() / "proposals" / f"scenes-{ds.split}-seed{ds.seed}-{mode}"
    p = d / f"{i:06d}.npy"
    if p.exists():
        return numpy.load(p)[:top]
    boxes = selective_search(ds[i][0], mode=mode, seed=i).astype(numpy.float32)
    d.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp.npy")
    numpy.save(tmp, boxes)
    tmp.replace(p)
    return boxes[:top]


def all_proposals(ds: DetectionScenes, n: int, mode: str = "fast", top: int = 2000) -> list[numpy.ndarray]:
    return [proposals(ds, i, mode, top) for i in _progress(range(n), n, f"proposals {ds.split}")]


def proposal_recall(ds: DetectionScenes, props: list[numpy.ndarray], thr: float = 0.5) -> float:
    hit = tot = 0
    for i, p in enumerate(props):
        g = ds[i][1]["boxes"].astype(numpy.float64)
        tot += len(g)
        if len(g) and len(p):
            hit += int((box_iou(g, p.astype(numpy.float64)).max(1) >= thr).sum())
    return hit / max(1, tot)


def label_rois(rois: numpy.ndarray, gt_boxes: numpy.ndarray, gt_labels: numpy.ndarray
               ) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """For each RoI: its best IoU with a ground-truth box, that box, and the box's label."""
    if len(gt_boxes) == 0:
        return numpy.zeros(len(rois)), numpy.zeros((len(rois), 4), numpy.float32), numpy.zeros(len(rois), numpy.int64)
    iou = box_iou(rois.astype(numpy.float64), gt_boxes.astype(numpy.float64))
    j = iou.argmax(1)
    return iou.max(1), gt_boxes[j], gt_labels[j]


def evaluate(detect: Callable[[numpy.ndarray, int], dict[str, numpy.ndarray]], ds: DetectionScenes, n: int,
             ) -> dict[str, Any]:
    """Run ``detect(image, index) -> {"boxes", "labels", "scores"}`` on scenes ``0..n-1``; VOC mAP@0.5,
    COCO mAP, and the mean wall time per image (everything ``detect`` does, proposals included)."""
    gts, dets, times = [], [], []
    for i in _progress(range(n), n, "evaluate"):
        img, t = ds[i]
        t0 = time.perf_counter()
        d = detect(img, i)
        times.append(time.perf_counter() - t0)
        gts.append({"boxes": t["boxes"], "labels": t["labels"], "area": t["masks"].sum((1, 2))})
        dets.append(d)
    voc = eval_detection_voc(gts, dets, ds.num_classes, 0.5)
    coco = eval_detection_coco(gts, dets, "bbox", categories=list(range(1, ds.num_classes)))
    return {"map50": voc["map"], "coco_map": coco["AP"], "coco_ap50": coco["AP50"], "sec_per_image":
            float(numpy.mean(times)), "voc": voc, "per_class_ap": voc["ap"][1:].tolist()}


def result_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table: mAP@0.5, COCO mAP, proposal recall, training time, time per image."""
    out = ["| model | mAP@0.5 (VOC) | COCO mAP@[.5:.95] | proposal recall@0.5 | train time (s) | s / test image |",
           "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        out.append(f"| {name} | {r['map50']:.3f} | {r['coco_map']:.3f} | {r.get('proposal_recall', float('nan')):.3f} "
                   f"| {r.get('train_seconds', float('nan')):.0f} | {r['sec_per_image']:.3f} |")
    return "\n".join(out)


def cache_dir() -> Path:
    return data_dir() / "proposals"


# -- crops and pre-training ----------------------------------------------------------------------------------
def crop_dataset(ds: DetectionScenes, n: int, size: int, rng: numpy.random.Generator,
                 bg_per_image: int = 5) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Pre-training crops from scenes ``0..n-1``: every object (its box jittered by up to 10%) with its
    label, and ``bg_per_image`` random boxes with IoU < 0.3 to every object, labelled 0 (background)."""
    xs, ys = [], []
    for i in _progress(range(n), n, "crops"):
        img, t = ds[i]
        H, W = img.shape[:2]
        b = t["boxes"].astype(numpy.float64)
        if len(b):
            wh = (b[:, 2:] - b[:, :2])[:, [0, 1, 0, 1]]
            jit = b + rng.uniform(-0.1, 0.1, b.shape) * wh
            xs.append(warp(img, jit, size))
            ys.append(t["labels"])
        bgs = []
        for _ in range(50):
            if len(bgs) == bg_per_image:
                break
            s = numpy.exp(rng.uniform(numpy.log(16), numpy.log(96)))
            w, h = s * numpy.exp(rng.uniform(-0.4, 0.4)), s
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            cand = numpy.array([[x, y, x + w, y + h]])
            if not len(b) or box_iou(cand, b).max() < 0.3:
                bgs.append(cand[0])
        if bgs:
            xs.append(warp(img, numpy.array(bgs), size))
            ys.append(numpy.zeros(len(bgs), dtype=numpy.int64))
    return numpy.concatenate(xs), numpy.concatenate(ys).astype(numpy.int64)


def pretrain_classifier(opts: Any, train: DetectionScenes, n_scenes: int, epochs: int, size: int,
                        seed: int) -> tuple[Any, dict[str, Any]]:
    """Train a :class:`~handgrad.vision.models.CropClassifier` on object/background crops (R-CNN's
    "pre-trained CNN"); returns it and ``{"pretrain_accuracy" (on held-out crops), "pretrain_seconds"}``."""
    rng = numpy.random.default_rng(seed)
    t0 = time.perf_counter()
    x, y = crop_dataset(train, n_scenes, size, rng)
    perm = rng.permutation(len(y))
    n_val = max(1, len(y) // 10)
    va, tr = perm[:n_val], perm[n_val:]
    model = CropClassifier(train.num_classes)
    trainer = Trainer(model, Adam(model.parameters(), lr=1e-3), F.cross_entropy,
                      progress=getattr(opts, "progress", None), verbose=False)
    loader = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=64, shuffle=True, seed=seed)
    val = DataLoader(TensorDataset(x[va], y[va]), batch_size=256)
    hist = trainer.fit(loader, val, epochs=epochs)
    acc = float(hist.rows[-1].get("val_accuracy", float("nan"))) if len(hist) else float("nan")
    return model, {"pretrain_crops": int(len(y)), "pretrain_val_accuracy": acc,
                   "pretrain_seconds": time.perf_counter() - t0}


# -- shared by the experiments' runs -------------------------------------------------------------------------
class IndexBatches:
    """Shuffled batches of scene indices, reshuffled every epoch (seeded)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.rng = n, batch, numpy.random.default_rng(seed)

    def __len__(self) -> int:
        return (self.n + self.batch - 1) // self.batch

    def __iter__(self) -> Any:
        p = self.rng.permutation(self.n)
        return iter([p[i:i + self.batch] for i in range(0, self.n, self.batch)])


def time_selective_search(ds: DetectionScenes, n: int, mode: str) -> float:
    """Mean seconds of a fresh (uncached) selective search on the first ``n`` scenes of ``ds``."""
    t0 = time.perf_counter()
    for i in range(n):
        selective_search(ds[i][0], mode, seed=i)
    return (time.perf_counter() - t0) / max(1, n)


def save_detector(out: str, model: Any, meta: dict[str, Any]) -> None:
    save(model.state_dict(), os.path.join(out, "detector.safetensors"))
    with open(os.path.join(out, "detector.json"), "w") as f:
        json.dump(meta, f, indent=1)


def detections_png(path: str, ds: DetectionScenes, detect: Any, n: int = 8, score: float = 0.5) -> None:
    tiles = []
    for i in range(n):
        img, _ = ds[i]
        d = detect(img, i)
        k = d["scores"] >= score
        tiles.append(draw_detections(img, d["boxes"][k], d["labels"][k], ds.classes, d["scores"][k]))
    W = ds.config.image_size[1]
    sheet = Image.new("RGB", (4 * (W + 4), ((n + 3) // 4) * (W + 4)), (255, 255, 255))
    for j, t in enumerate(tiles):
        sheet.paste(t, ((j % 4) * (W + 4), (j // 4) * (W + 4)))
    sheet.save(path)


def read_meta(folder: str) -> dict[str, Any]:
    """A run folder's ``detector.json`` (``{}`` when it has none or it is unreadable: ``load_init`` then says
    what is wrong)."""
    try:
        with open(os.path.join(folder, "detector.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_init(init: str, make: Callable[[], Any], kind: str, fresh_prefixes: tuple[str, ...] = ()) -> Any:
    """The detector built by ``make()`` with the weights of ``--init DIR`` (its ``detector.safetensors``);
    a missing file or weights of another detector are one-line ``ExperimentError``s naming ``kind``.
    Parameters whose names start with one of ``fresh_prefixes`` may be absent from the file and keep their
    initialisation (a Mask R-CNN's mask head started from a Faster R-CNN run)."""
    weights = os.path.join(init, "detector.safetensors")
    if not os.path.isfile(weights):
        raise ExperimentError(f"--init {init}: no detector.safetensors there")
    model = make()
    try:
        if not fresh_prefixes:
            load_into(model, weights)
            return model
        state = load(weights)
        have = set(model.state_dict())
        missing = sorted(k for k in have - set(state) if not k.startswith(fresh_prefixes))
        extra = sorted(set(state) - have)
        if missing or extra:
            raise KeyError(f"missing {missing[:3]}, unexpected {extra[:3]}")
        model.load_state_dict(state, strict=False)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ExperimentError(f"--init {init}: not a {kind} detector for these scenes ({e})") from e
    return model


def finish(out: str, ev: dict[str, Any], row: dict[str, Any], table: str, test: DetectionScenes, detect: Any,
           n_test: int, title: str, recall: float, train_seconds: float, ss_sec: float, t_props: float
           ) -> dict[str, Any]:
    """Write the PR curves, the detections sheet and ``results.md`` under ``out``, print the table, and
    return the result keys shared by the proposal-based detectors (the caller appends its own)."""
    plot_pr_curves(ev["voc"], os.path.join(out, "pr_curves.png"), test.classes, title)
    detections_png(os.path.join(out, "detections.png"), test, detect, n=min(8, n_test))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return {"map50": ev["map50"], "coco_map": ev["coco_map"], "coco_ap50": ev["coco_ap50"],
            "proposal_recall_at_0.5": recall, "train_seconds": train_seconds,
            "sec_per_image": row["sec_per_image"], "detect_sec_per_image": ev["sec_per_image"],
            "selective_search_sec_per_image": ss_sec, "proposal_precompute_seconds": t_props,
            "per_class_ap50": ev["per_class_ap"]}
