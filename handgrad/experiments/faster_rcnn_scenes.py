"""``handgrad run faster-rcnn-scenes``: Faster R-CNN (Ren et al. 2015) on the generated detection scenes, and
the comparison with Fast R-CNN + selective search on the same test scenes.

1. The scene CNN pre-trained as a crop classifier (objects + background, 48x48 warps), as the Fast R-CNN
   run does (the stand-in for ImageNet pre-training), unless ``--init`` continues an earlier run.
2. Faster R-CNN from that backbone: RPN (18 anchors per position, sizes 16..96, see
   :mod:`handgrad.vision.anchors`) + the Fast R-CNN head, trained jointly (approximate joint training) with
   the four losses; 2 images per step, horizontal flips; Adam with a cosine decay of the rate over the run's
   steps (``--lr-schedule constant`` keeps it fixed). Through the library's ``Trainer`` and a
   ``FasterRCNNUpdater``. ``--init DIR`` continues an earlier run (a fresh Adam); ``--train-start`` picks
   the first train scene, so chained runs can see new scenes.
3. Test scenes: mAP@0.5 (VOC area), COCO mAP, recall@0.5 of the top 300 proposals, time per image split
   into backbone / RPN / NMS / head. With ``--fast-rcnn DIR`` (a ``fast-rcnn-scenes`` run folder) the saved
   Fast R-CNN is evaluated on the same test scenes with its selective-search proposals (cached; its time
   per image adds a fresh selective search timed on up to 10 scenes) and both go into one table.
   Writes ``detector.safetensors`` + ``detector.json`` (for ``handgrad detect``), ``pr_curves.png``,
   ``detections.png`` and ``results.md``.

``mask-rcnn-scenes`` (:mod:`handgrad.experiments.mask_rcnn_scenes`) runs the same loop with a mask head
(``--mask-convs``, default 4 as in the paper, ``--mask-channels``, default 64; ``--init`` also takes a
faster-rcnn-scenes run, the mask head then starting fresh) and reports, beside box and mask AP, the mask AP
of the mask branch alone on the ground-truth boxes and classes: the mask quality perfect boxes would allow.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy
from PIL import Image

from handgrad.data.scenes import SPLIT_SIZES, DetectionScenes, draw_detections
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments import _detection as D
from handgrad.metrics.detection import eval_detection_coco, eval_detection_voc, plot_pr_curves
from handgrad.optim import Adam
from handgrad.serialization import load
from handgrad.train import Trainer
from handgrad.train.updaters import Updater
from handgrad.vision.models import FastRCNN
from handgrad.vision.models.faster_rcnn import FasterRCNN
from handgrad.vision.models.mask_rcnn import MaskRCNN
from handgrad.vision.ops import box_iou


def add_arguments(p: Any) -> None:
    p.add_argument("--train-scenes", type=int, default=None, help="train scenes used (default 2000; 6 quick)")
    p.add_argument("--train-start", type=int, default=0,
                   help="index of the first train scene used (default 0): chained --init runs can see new scenes")
    p.add_argument("--test-scenes", type=int, default=None, help="test scenes evaluated (default 100; 3 quick)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="crop-classifier epochs (default 4; 0: none)")
    p.add_argument("--rois-per-image", type=int, default=64, help="RoIs sampled per image for the head (default 64)")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="continue training the detector of an earlier run of this experiment (skips pre-training); "
                        "mask-rcnn-scenes also takes a faster-rcnn-scenes run (its mask head then starts fresh)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate over the run's steps: cosine decay to 0 (default) or constant")
    p.add_argument("--mask-convs", type=int, default=None,
                   help="mask head: 3x3 convolutions before the deconvolution (default 4, the paper's; mask-rcnn)")
    p.add_argument("--mask-channels", type=int, default=None, help="mask head: channels (default 64; mask-rcnn)")
    p.add_argument("--fast-rcnn", default=None, metavar="DIR",
                   help="a fast-rcnn-scenes run folder: evaluate its detector on the same test scenes (one table)")


class FasterRCNNUpdater(Updater):
    """One joint step on a batch of scene indices: flip, the model's four (five with masks) losses, summed."""

    def __init__(self, model: FasterRCNN, optimizer: Any, ds: DetectionScenes, seed: int,
                 total_steps: int | None = None, start: int = 0) -> None:
        super().__init__(model, optimizer)
        self.ds, self.start = ds, start
        self.rng = numpy.random.default_rng(seed)
        # cosine decay over the run's steps: lr_t = lr_0 (1 + cos(pi t / T)) / 2, from the step count (so a
        # resumed run continues the same curve); None: the optimizer's constant rate
        self.total_steps = total_steps
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]

    def update(self, batch: Any) -> dict[str, Any]:
        if self.total_steps:
            f = 0.5 * (1.0 + math.cos(math.pi * min(self.iteration, self.total_steps) / self.total_steps))
            for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr * f
        return super().update(batch)

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        imgs, targets = [], []
        for i in batch:
            img, t = self.ds[self.start + int(i)]
            t = {"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"]}
            if self.rng.random() < 0.5:  # horizontal flip: image, boxes and masks
                W = img.shape[1]
                img = img[:, ::-1]
                t = {"boxes": t["boxes"][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [W, 0, W, 0], "labels": t["labels"],
                     "masks": t["masks"][:, :, ::-1]}
            imgs.append(D.normalize(numpy.ascontiguousarray(img)))
            targets.append(t)
        losses, s, _ = self.model.losses(Tensor(numpy.stack(imgs)), targets, self.rng)
        total = sum(losses.values(), Tensor(numpy.zeros((), numpy.float32)))
        return total, None, s["roi_labels"]


def build(opts: Any, train: DetectionScenes, pre_epochs: int, masks: bool, kind: str
          ) -> tuple[FasterRCNN, dict[str, Any]]:
    """The detector, from ``--init DIR`` or from a backbone pre-trained on crops."""
    mask_kw = mask_options(opts, D.read_meta(opts.init) if opts.init else {}) if masks else {}
    cls = MaskRCNN if masks else FasterRCNN

    def make(**kw: Any) -> FasterRCNN:
        return cls(train.num_classes, rois_per_image=opts.rois_per_image, **mask_kw, **kw)

    if opts.init:
        # a Faster R-CNN run starts a Mask R-CNN: every weight but the (fresh) mask head's
        fresh = ("mask_head.",) if masks and D.read_meta(opts.init).get("kind") == "faster-rcnn" else ()
        model = D.load_init(opts.init, make, kind, fresh_prefixes=fresh)
        return model, {"init": opts.init}
    if pre_epochs == 0:  # no pre-training: the backbone starts from its random initialisation
        return make(), {"pretrain_epochs": 0}
    # crops of the first 400 scenes at most (~4,000 crops): enough for the stand-in of ImageNet pre-training,
    # and the 2,000-scene default would spend a quarter of its hour here
    clf, pre = D.pretrain_classifier(opts, train, min(train.size, 400), pre_epochs, 48, opts.seed)
    return make(backbone=clf.backbone), pre


def mask_options(opts: Any, meta: dict[str, Any]) -> dict[str, int]:
    """The mask head's shape: ``--mask-convs/--mask-channels``, else an ``--init`` Mask R-CNN's, else 4 x 64."""
    legacy = 2 if meta.get("kind") == "mask-rcnn" else 4  # runs saved before the option had 2 convs
    convs, channels = opts.mask_convs, opts.mask_channels
    out = {"mask_convs": convs if convs is not None else int(meta.get("mask_convs", legacy)),
           "mask_channels": channels if channels is not None else int(meta.get("mask_channels", 64))}
    if out["mask_convs"] < 0 or out["mask_channels"] < 1:
        raise ExperimentError(f"need --mask-convs >= 0 and --mask-channels >= 1, got {out['mask_convs']} and "
                              f"{out['mask_channels']}")
    return out


def evaluate(model: FasterRCNN, ds: DetectionScenes, n: int, masks: bool) -> dict[str, Any]:
    """Box (and mask) AP, recall@0.5 of the top 300 proposals, seconds per image by stage."""
    gts, dets, gt_box_dets, tm, hit, tot, t_diag = [], [], [], {}, 0, 0, 0.0
    t0 = time.perf_counter()
    for i in D._progress(range(n), n, "evaluate"):
        img, t = ds[i]
        d = model.detect(img, normalize=D.normalize, timings=tm, **({"masks": True} if masks else {}))
        gts.append({"boxes": t["boxes"], "labels": t["labels"], "area": t["masks"].sum((1, 2)), "masks": t["masks"]})
        dets.append(d)
        if masks:  # the mask branch alone on the ground-truth boxes and classes (score 1); not in the timing
            t1 = time.perf_counter()
            gm = model.masks_for_boxes(img, t["boxes"], t["labels"], normalize=D.normalize)
            gt_box_dets.append({"boxes": t["boxes"], "labels": t["labels"], "scores": numpy.ones(len(gm)), "masks": gm})
            t_diag += time.perf_counter() - t1
        tot += len(t["boxes"])
        if len(t["boxes"]) and len(d["proposals"]):
            hit += int((box_iou(t["boxes"].astype(numpy.float64), d["proposals"][:300].astype(numpy.float64))
                        .max(1) >= 0.5).sum())
    total = (time.perf_counter() - t0 - t_diag) / max(1, n)
    cats = list(range(1, ds.num_classes))
    voc = eval_detection_voc(gts, dets, ds.num_classes, 0.5)
    coco = eval_detection_coco(gts, dets, "bbox", categories=cats)
    out = {"map50": voc["map"], "coco_map": coco["AP"], "coco_ap50": coco["AP50"], "voc": voc,
           "proposal_recall": hit / max(1, tot), "sec_per_image": total,
           "stage_sec_per_image": {k: v / max(1, n) for k, v in tm.items()}, "per_class_ap": voc["ap"][1:].tolist()}
    if masks:
        segm = eval_detection_coco(gts, dets, "segm", categories=cats)
        up = eval_detection_coco(gts, gt_box_dets, "segm", categories=cats)
        ious = [float((a & b).sum()) / max(1.0, float((a | b).sum()))
                for g, d in zip(gts, gt_box_dets) for a, b in zip(g["masks"], d["masks"])]
        out.update({"mask_map50": segm["AP50"], "mask_coco_map": segm["AP"], "mask_map50_gt_boxes": up["AP50"],
                    "mask_coco_map_gt_boxes": up["AP"], "mask_iou_gt_boxes": float(numpy.mean(ious)) if ious else 0.0})
    return out


def evaluate_fast_rcnn(folder: str, test: DetectionScenes, n: int, quick: bool) -> dict[str, Any]:
    """A saved fast-rcnn-scenes detector on the same test scenes, with its cached selective-search proposals."""
    try:
        with open(os.path.join(folder, "detector.json")) as f:
            meta = json.load(f)
        if meta.get("kind") != "fast-rcnn":
            raise ExperimentError(f"--fast-rcnn {folder}: a {meta.get('kind')!r} detector, not fast-rcnn")
        net = FastRCNN(len(meta["classes"]), pooling=meta.get("pooling", "align"))
        net.load_state_dict(load(os.path.join(folder, "detector.safetensors")))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ExperimentError(f"--fast-rcnn {folder}: not a readable Fast R-CNN run ({e})") from e
    if meta["classes"] != test.classes:
        raise ExperimentError(f"--fast-rcnn {folder}: its classes differ from these scenes'")
    mode, top = str(meta.get("proposal_mode", "fast")), int(meta.get("proposals", 2000))
    props = D.all_proposals(test, n, mode=mode, top=top)
    ev = D.evaluate(lambda img, i: net.detect(img, props[i], normalize=D.normalize), test, n)
    ss = D.time_selective_search(test, min(n, 1 if quick else 10), mode)
    ev.update({"proposal_recall": D.proposal_recall(test, [p[:300] for p in props]), "detect_sec": ev["sec_per_image"],
               "selective_search_sec": ss, "sec_per_image": ev["sec_per_image"] + ss, "proposal_mode": mode})
    return ev


def table(rows: dict[str, dict[str, Any]]) -> str:
    out = ["| model | mAP@0.5 (VOC) | COCO mAP | proposal recall@0.5 (top 300) | s / image | backbone | "
           "proposals (RPN / selective search) | NMS | head |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        st = r.get("stage_sec_per_image")
        if st:
            parts = f"{st['backbone']:.3f} | {st['rpn']:.3f} | {st['nms']:.3f} | {st['head'] + st.get('mask', 0):.3f}"
        else:
            parts = f"- | {r['selective_search_sec']:.3f} | - | {r['detect_sec']:.3f} (backbone + head + NMS)"
        out.append(f"| {name} | {r['map50']:.3f} | {r['coco_map']:.3f} | {r['proposal_recall']:.3f} | "
                   f"{r['sec_per_image']:.3f} | {parts} |")
    return "\n".join(out)


def run_experiment(opts: Any, masks: bool) -> dict[str, Any]:
    kind = "mask-rcnn" if masks else "faster-rcnn"
    n_train = opts.train_scenes or (6 if opts.quick else 2000)
    n_test = opts.test_scenes or (3 if opts.quick else 100)
    pre_epochs = opts.pretrain_epochs if opts.pretrain_epochs is not None else (1 if opts.quick else 4)
    if n_train < 2 or n_test < 1 or opts.rois_per_image < 4 or pre_epochs < 0:
        raise ExperimentError("need --train-scenes >= 2, --test-scenes >= 1, --rois-per-image >= 4, "
                              "--pretrain-epochs >= 0 (0: no pre-training)")
    if not 0 <= opts.train_start <= SPLIT_SIZES["train"] - n_train:
        raise ExperimentError(f"need 0 <= --train-start <= {SPLIT_SIZES['train']} - --train-scenes "
                              f"({SPLIT_SIZES['train'] - n_train}), got {opts.train_start}")
    train = DetectionScenes("train", size=opts.train_start + n_train, seed=opts.seed)
    test = DetectionScenes("test", size=n_test, seed=opts.seed)
    t0 = time.perf_counter()
    model, pre = build(opts, train, pre_epochs, masks, kind)
    batches = D.IndexBatches(n_train, opts.batch_size, opts.seed)
    steps = len(batches) * opts.epochs if opts.lr_schedule == "cosine" else None
    updater = FasterRCNNUpdater(model, Adam(model.parameters(), lr=opts.lr), train, opts.seed, total_steps=steps,
                                start=opts.train_start)
    trainer = Trainer(updater=updater, metrics=(), out_dir=opts.out, progress=opts.progress, run_name=opts.experiment)
    hist = trainer.fit(batches, epochs=opts.epochs)
    train_seconds = time.perf_counter() - t0

    ev = evaluate(model, test, n_test, masks)
    ev["train_seconds"] = train_seconds
    name = "Mask R-CNN" if masks else "Faster R-CNN"
    rows = {f"{name} (RPN)": ev}
    fast = evaluate_fast_rcnn(opts.fast_rcnn, test, n_test, opts.quick) if getattr(opts, "fast_rcnn", None) else None
    if fast is not None:
        rows["Fast R-CNN + selective search"] = fast
    text = table(rows)
    if masks:
        text += (f"\n\nMask AP on the same {n_test} test scenes (COCO segm, handgrad's RLE / mask IoU): "
                 f"mask mAP@0.5 {ev['mask_map50']:.3f}, mask COCO mAP {ev['mask_coco_map']:.3f}; the mask branch "
                 f"alone on the ground-truth boxes and classes (its upper bound with perfect boxes): mask mAP@0.5 "
                 f"{ev['mask_map50_gt_boxes']:.3f}, mask COCO mAP {ev['mask_coco_map_gt_boxes']:.3f}, mean mask "
                 f"IoU {ev['mask_iou_gt_boxes']:.3f}")
    meta = {"kind": kind, "classes": train.classes}
    if masks:
        meta.update(mask_convs=model.mask_convs, mask_channels=model.mask_channels)
    D.save_detector(opts.out, model, meta)
    plot_pr_curves(ev["voc"], os.path.join(opts.out, "pr_curves.png"), train.classes, f"{name}, test scenes")
    _grid(os.path.join(opts.out, "detections.png"), test, model, min(8, n_test), masks)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    res = {"map50": ev["map50"], "coco_map": ev["coco_map"], "coco_ap50": ev["coco_ap50"],
           "proposal_recall_at_0.5_top300": ev["proposal_recall"], "train_seconds": train_seconds,
           "sec_per_image": ev["sec_per_image"], "stage_sec_per_image": ev["stage_sec_per_image"],
           "per_class_ap50": ev["per_class_ap"], "final_train_loss": hist.rows[-1]["loss"] if len(hist) else None,
           "n_train_scenes": n_train, "train_start": opts.train_start, "n_test_scenes": n_test, **pre}
    if masks:
        res.update({k: ev[k] for k in ("mask_map50", "mask_coco_map", "mask_map50_gt_boxes", "mask_coco_map_gt_boxes",
                                       "mask_iou_gt_boxes")})
        res.update({k: meta[k] for k in ("mask_convs", "mask_channels")})
    res["lr_schedule"] = opts.lr_schedule
    res["train_steps"] = len(batches) * opts.epochs
    if fast is not None:
        res["fast_rcnn"] = {k: fast[k] for k in ("map50", "coco_map", "proposal_recall", "sec_per_image",
                                                 "detect_sec", "selective_search_sec")}
        res["speedup_vs_fast_rcnn"] = fast["sec_per_image"] / max(ev["sec_per_image"], 1e-9)
    return res


def _grid(path: str, ds: DetectionScenes, model: FasterRCNN, n: int, masks: bool, score: float = 0.5) -> None:
    tiles = []
    for i in range(n):
        img, _ = ds[i]
        d = model.detect(img, normalize=D.normalize, **({"masks": True} if masks else {}))
        k = d["scores"] >= score
        tiles.append(draw_detections(img, d["boxes"][k], d["labels"][k], ds.classes, d["scores"][k],
                                     masks=d["masks"][k] if masks else None))
    H, W = ds.config.image_size
    sheet = Image.new("RGB", (4 * (W + 4), ((n + 3) // 4) * (H + 4)), (255, 255, 255))
    for j, t in enumerate(tiles):
        sheet.paste(t, ((j % 4) * (W + 4), (j // 4) * (H + 4)))
    sheet.save(path)


def run(opts: Any) -> dict[str, Any]:
    return run_experiment(opts, masks=False)
