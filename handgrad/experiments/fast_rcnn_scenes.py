"""``handgrad run fast-rcnn-scenes``: Fast R-CNN (Girshick 2015) on the generated detection scenes.

1. Selective-search proposals ("fast" mode, top 2,000) for every scene (cached under the data dir).
2. The scene CNN pre-trained as a crop classifier (objects + background, 48x48 warps), as R-CNN does.
3. Fast R-CNN from that backbone: 2 images per step, 64 RoIs per image sampled by IoU (25% foreground),
   ``roi_align`` (or ``--pooling pool``: ``roi_pool``) to 7x7, FC head, multi-task loss with smooth L1; Adam.
   Trained with the library's ``Trainer`` through a ``FastRCNNUpdater``.
4. Test scenes: mAP@0.5 (VOC area), COCO mAP, proposal recall, training time and time per image with the
   selective search included. Writes ``detector.safetensors`` + ``detector.json`` (for ``handgrad detect``),
   ``pr_curves.png``, ``detections.png`` and ``results.md`` (the table) besides ``results.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy

from handgrad.data.scenes import DetectionScenes
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments import _detection as D
from handgrad.optim import Adam
from handgrad.train import Trainer
from handgrad.train.updaters import Updater
from handgrad.vision.models import FastRCNN


def add_arguments(p: Any) -> None:
    p.add_argument("--train-scenes", type=int, default=None, help="train scenes used (default 400; 6 quick)")
    p.add_argument("--test-scenes", type=int, default=None, help="test scenes evaluated (default 100; 3 quick)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="crop-classifier epochs (default 4)")
    p.add_argument("--pooling", choices=("align", "pool"), default="align", help="roi_align (default) or roi_pool")
    p.add_argument("--rois-per-image", type=int, default=64, help="sampled RoIs per image (default 64)")
    p.add_argument("--proposals", type=int, default=2000, help="selective-search proposals kept (default 2000)")
    p.add_argument("--proposal-mode", choices=("single", "fast", "quality"), default=None,
                   help="selective-search mode (default fast; single under --quick)")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="continue training the detector of an earlier fast-rcnn-scenes run (skips pre-training)")


class FastRCNNUpdater(Updater):
    """One step on a batch of scene indices: sample RoIs by IoU, forward once per batch, multi-task loss."""

    def __init__(self, model: FastRCNN, optimizer: Any, ds: DetectionScenes, props: list[numpy.ndarray],
                 rois_per_image: int, seed: int) -> None:
        super().__init__(model, optimizer)
        self.ds, self.props, self.rois_per_image = ds, props, rois_per_image
        self.rng = numpy.random.default_rng(seed)

    def loss_and_output(self, batch: Any) -> tuple[Tensor, Any, Any]:
        imgs, rois, labels, targets = [], [], [], []
        for b, i in enumerate(batch):
            img, t = self.ds[int(i)]
            if self.rng.random() < 0.5:  # horizontal flip, boxes and proposals with it
                img = img[:, ::-1]
                W = img.shape[1]
                gt = t["boxes"][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [W, 0, W, 0]
                pr = self.props[int(i)][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [W, 0, W, 0]
            else:
                gt, pr = t["boxes"], self.props[int(i)]
            r, lab, tg = FastRCNN.sample_rois(pr, gt, t["labels"], self.rng, self.rois_per_image)
            imgs.append(D.normalize(numpy.ascontiguousarray(img)))
            rois.append(numpy.concatenate([numpy.full((len(r), 1), b, numpy.float32), r], 1))
            labels.append(lab)
            targets.append(tg)
        lab = numpy.concatenate(labels)
        logits, deltas = self.model(Tensor(numpy.stack(imgs)), numpy.concatenate(rois))
        cls, box = self.model.loss(logits, deltas, lab, numpy.concatenate(targets))
        return cls + box, logits, lab


def run(opts: Any) -> dict[str, Any]:
    n_train = opts.train_scenes or (6 if opts.quick else 400)
    n_test = opts.test_scenes or (3 if opts.quick else 100)
    pre_epochs = opts.pretrain_epochs if opts.pretrain_epochs is not None else (1 if opts.quick else 4)
    if n_train < 2 or n_test < 1 or opts.rois_per_image < 4 or opts.proposals < 1:
        raise ExperimentError("need --train-scenes >= 2, --test-scenes >= 1, --rois-per-image >= 4, --proposals >= 1")
    train = DetectionScenes("train", size=n_train, seed=opts.seed)
    test = DetectionScenes("test", size=n_test, seed=opts.seed)
    t_start = time.perf_counter()
    mode = opts.proposal_mode or ("single" if opts.quick else "fast")
    train_props = D.all_proposals(train, n_train, mode=mode, top=opts.proposals)
    test_props = D.all_proposals(test, n_test, mode=mode, top=opts.proposals)
    t_props = time.perf_counter() - t_start
    recall = D.proposal_recall(test, test_props)

    t0 = time.perf_counter()
    if opts.init:
        model = D.load_init(opts.init, lambda: FastRCNN(train.num_classes, pooling=opts.pooling), "Fast R-CNN")
        pre: dict[str, Any] = {"init": opts.init}
    else:
        clf, pre = D.pretrain_classifier(opts, train, n_train, pre_epochs, 48, opts.seed)
        model = FastRCNN(train.num_classes, backbone=clf.backbone, pooling=opts.pooling)
    updater = FastRCNNUpdater(model, Adam(model.parameters(), lr=opts.lr), train, train_props,
                              opts.rois_per_image, opts.seed)
    trainer = Trainer(updater=updater, metrics=(), out_dir=opts.out, progress=opts.progress,
                      run_name=opts.experiment)
    hist = trainer.fit(D.IndexBatches(n_train, opts.batch_size, opts.seed), epochs=opts.epochs)
    train_seconds = time.perf_counter() - t0

    def detect(img: numpy.ndarray, i: int) -> dict[str, numpy.ndarray]:
        return model.detect(img, test_props[i], normalize=D.normalize)

    ev = D.evaluate(detect, test, n_test)
    ss_sec = D.time_selective_search(test, min(n_test, 1 if opts.quick else 10), mode)
    row = {"map50": ev["map50"], "coco_map": ev["coco_map"], "proposal_recall": recall,
           "train_seconds": train_seconds, "sec_per_image": ev["sec_per_image"] + ss_sec}
    table = D.result_table({f"Fast R-CNN ({opts.pooling})": row})
    meta = {"kind": "fast-rcnn", "classes": train.classes, "pooling": opts.pooling, "proposals": opts.proposals,
            "proposal_mode": mode}
    D.save_detector(opts.out, model, meta)
    res = D.finish(opts.out, ev, row, table, test, detect, n_test, "Fast R-CNN, test scenes", recall,
                   train_seconds, ss_sec, t_props)
    return {**res, "final_train_loss": hist.rows[-1]["loss"] if len(hist) else None,
            "n_train_scenes": n_train, "n_test_scenes": n_test, **pre}
