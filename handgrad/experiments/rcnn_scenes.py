"""``handgrad run rcnn-scenes``: R-CNN (Girshick et al. 2014) on the generated detection scenes.

1. Selective-search proposals ("fast" mode, top 2,000 per image; cached under the data dir).
2. The scene CNN pre-trained as a crop classifier (objects + background, 48x48 warps with 15% context).
3. Fine-tuned on warped proposals labelled by IoU (>= 0.5: the object's class, else background), 8
   foreground + 24 background proposals per scene per epoch (the paper's 32 + 96 per 128).
4. Features: the fine-tuned CNN's last conv map average-pooled 2x2 (512-d), scaled to mean norm 20.
   Per-class linear SVMs (hinge loss, C = 1e-3, positive weight 2): positives are the ground-truth boxes,
   negatives proposals with IoU < 0.3 to every box of the class, from a pool of 64 random proposals per
   scene, with 3 rounds of hard-negative mining. Per-class ridge box regressors on proposals with IoU >= 0.6.
5. Test scenes: every proposal warped and scored, boxes regressed, per-class NMS at 0.3; mAP@0.5, COCO mAP,
   proposal recall, training time, time per image (selective search included). Writes the same files as
   ``fast-rcnn-scenes`` (``detector.json`` + ``detector.safetensors`` + ``rcnn_heads.npz`` for the SVMs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.data import DataLoader, TensorDataset
from handgrad.data.scenes import DetectionScenes
from handgrad.errors import ExperimentError
from handgrad.experiments import _detection as D
from handgrad.optim import Adam
from handgrad.train import Trainer
from handgrad.vision.models.rcnn import RCNN, rcnn_features, train_svm_hard_negatives
from handgrad.vision.ops import box_iou, encode_boxes

CROP = 48


def add_arguments(p: Any) -> None:
    p.add_argument("--train-scenes", type=int, default=None, help="train scenes used (default 300; 6 quick)")
    p.add_argument("--test-scenes", type=int, default=None, help="test scenes evaluated (default 100; 3 quick)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="crop-classifier epochs (default 4)")
    p.add_argument("--proposals", type=int, default=2000, help="selective-search proposals kept (default 2000)")
    p.add_argument("--proposal-mode", choices=("single", "fast", "quality"), default=None,
                   help="selective-search mode (default fast; single under --quick)")
    p.add_argument("--svm-c", type=float, default=1e-3, help="SVM regularisation C (default 1e-3)")


def finetune_set(ds: DetectionScenes, props: list[numpy.ndarray], rng: numpy.random.Generator, n_fg: int = 8,
                 n_bg: int = 24) -> tuple[numpy.ndarray, numpy.ndarray]:
    xs, ys = [], []
    for i in range(len(props)):
        img, t = ds[i]
        iou, _, lab = D.label_rois(props[i], t["boxes"], t["labels"])
        fg, bg = numpy.flatnonzero(iou >= 0.5), numpy.flatnonzero(iou < 0.5)
        fg = rng.choice(fg, min(n_fg, len(fg)), replace=False)
        bg = rng.choice(bg, min(n_bg, len(bg)), replace=False)
        keep = numpy.concatenate([fg, bg]).astype(numpy.int64)
        xs.append(D.warp(img, props[i][keep], CROP))
        y = numpy.zeros(len(keep), dtype=numpy.int64)
        y[:len(fg)] = lab[fg]
        ys.append(y)
    return numpy.concatenate(xs), numpy.concatenate(ys)


def svm_data(cnn: Any, ds: DetectionScenes, props: list[numpy.ndarray], rng: numpy.random.Generator,
             pool: int = 64, reg: int = 8) -> dict[str, numpy.ndarray]:
    """Features of ground-truth boxes (positives), a pool of random proposals (negatives, with their IoU to
    each class's boxes) and high-IoU proposals (box regression, with targets)."""
    C = ds.num_classes
    gx, gy, px, piou, rx, rt, ry = [], [], [], [], [], [], []
    for i in D._progress(range(len(props)), len(props), "features"):
        img, t = ds[i]
        gb, gl = t["boxes"].astype(numpy.float64), t["labels"]
        p = props[i].astype(numpy.float64)
        sel = rng.choice(len(p), min(pool, len(p)), replace=False)
        ious = numpy.zeros((len(sel), C))
        if len(gb):
            m = box_iou(p[sel], gb)
            for k in numpy.unique(gl):
                ious[:, k] = m[:, gl == k].max(1)
        iou, gbox, glab = D.label_rois(p, gb, gl)
        hi = numpy.flatnonzero(iou >= 0.6)
        hi = rng.choice(hi, min(reg, len(hi)), replace=False)
        boxes = numpy.concatenate([gb, p[sel], p[hi]])
        f = rcnn_features(cnn, D.warp(img, boxes, CROP))
        gx.append(f[:len(gb)])
        gy.append(gl)
        px.append(f[len(gb):len(gb) + len(sel)])
        piou.append(ious)
        rx.append(f[len(gb) + len(sel):])
        ry.append(glab[hi])
        rt.append(encode_boxes(gbox[hi].astype(numpy.float64), p[hi]) if len(hi) else numpy.zeros((0, 4)))
    return {"gx": numpy.concatenate(gx), "gy": numpy.concatenate(gy), "px": numpy.concatenate(px),
            "piou": numpy.concatenate(piou), "rx": numpy.concatenate(rx), "ry": numpy.concatenate(ry),
            "rt": numpy.concatenate(rt)}


def run(opts: Any) -> dict[str, Any]:
    n_train = opts.train_scenes or (6 if opts.quick else 300)
    n_test = opts.test_scenes or (3 if opts.quick else 100)
    pre_epochs = opts.pretrain_epochs if opts.pretrain_epochs is not None else (1 if opts.quick else 4)
    if n_train < 2 or n_test < 1 or opts.proposals < 1 or opts.svm_c <= 0:
        raise ExperimentError("need --train-scenes >= 2, --test-scenes >= 1, --proposals >= 1, --svm-c > 0")
    mode = opts.proposal_mode or ("single" if opts.quick else "fast")
    train = DetectionScenes("train", size=n_train, seed=opts.seed)
    test = DetectionScenes("test", size=n_test, seed=opts.seed)
    t_start = time.perf_counter()
    train_props = D.all_proposals(train, n_train, mode=mode, top=opts.proposals)
    test_props = D.all_proposals(test, n_test, mode=mode, top=opts.proposals)
    t_props = time.perf_counter() - t_start
    recall = D.proposal_recall(test, test_props)
    rng = numpy.random.default_rng(opts.seed)

    t0 = time.perf_counter()
    cnn, pre = D.pretrain_classifier(opts, train, n_train, pre_epochs, CROP, opts.seed)
    x, y = finetune_set(train, train_props, rng)
    trainer = Trainer(cnn, Adam(cnn.parameters(), lr=opts.lr), F.cross_entropy, out_dir=opts.out,
                      progress=opts.progress, run_name=opts.experiment)
    hist = trainer.fit(DataLoader(TensorDataset(x, y), batch_size=opts.batch_size, shuffle=True, seed=opts.seed),
                       epochs=opts.epochs)
    data = svm_data(cnn, train, train_props, rng)
    scale = 20.0 / max(1e-12, float(numpy.linalg.norm(data["px"], axis=1).mean()))
    model = RCNN(cnn, train.num_classes, CROP)
    model.feature_scale = scale
    for k in range(1, train.num_classes):
        pos = data["gx"][data["gy"] == k] * scale
        neg = data["px"][data["piou"][:, k] < 0.3] * scale
        if len(pos) and len(neg):
            model.svms[k] = train_svm_hard_negatives(pos, neg, C=opts.svm_c, seed=opts.seed + k)
        r = data["ry"] == k
        if r.sum() >= 4:
            model.regressor.fit(k, data["rx"][r] * scale, data["rt"][r])
    train_seconds = time.perf_counter() - t0

    def detect(img: numpy.ndarray, i: int) -> dict[str, numpy.ndarray]:
        return model.detect(img, test_props[i], D.warp)

    ev = D.evaluate(detect, test, n_test)
    ss_sec = D.time_selective_search(test, min(n_test, 1 if opts.quick else 10), mode)
    row = {"map50": ev["map50"], "coco_map": ev["coco_map"], "proposal_recall": recall,
           "train_seconds": train_seconds, "sec_per_image": ev["sec_per_image"] + ss_sec}
    table = D.result_table({"R-CNN": row})
    D.save_detector(opts.out, cnn, {"kind": "rcnn", "classes": train.classes, "proposals": opts.proposals,
                                    "proposal_mode": mode, "crop": CROP})
    svm_w = numpy.stack([s.w if s is not None else numpy.zeros(data["px"].shape[1]) for s in model.svms])
    svm_b = numpy.array([s.b if s is not None else -numpy.inf for s in model.svms])
    numpy.savez(os.path.join(opts.out, "rcnn_heads.npz"), svm_w=svm_w, svm_b=svm_b, reg_w=model.regressor.W,
                feature_scale=scale)
    res = D.finish(opts.out, ev, row, table, test, detect, n_test, "R-CNN, test scenes", recall, train_seconds,
                   ss_sec, t_props)
    return {**res, "finetune_crops": int(len(y)),
            "finetune_final_accuracy": hist.rows[-1].get("accuracy") if len(hist) else None,
            "svm_positives": int(len(data["gy"])), "svm_negative_pool": int(len(data["px"])),
            "n_train_scenes": n_train, "n_test_scenes": n_test, **pre}
