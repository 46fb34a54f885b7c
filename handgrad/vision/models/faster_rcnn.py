"""Faster R-CNN (Ren et al. 2015): Fast R-CNN whose proposals come from a region proposal network on the
same feature map, trained jointly.

``FasterRCNN`` extends :class:`~handgrad.vision.models.FastRCNN` (backbone, RoI pooling, FC head, the
head's multi-task loss and RoI sampling) with a :class:`~handgrad.vision.models.rpn.RegionProposalNetwork`.
One training step (:meth:`FasterRCNN.losses`) on images ``(N, 3, H, W)``:

1. features ``f = backbone(x)``; RPN logits and offsets at every anchor;
2. anchor targets (256 anchors per image, <= half positive) -> the RPN objectness loss (BCE) and box loss
   (smooth L1, beta 1/9), both over the sampled anchors;
3. proposals from the RPN's **detached** outputs (decode, clip, remove small, top 3,000, NMS 0.7, top 600);
4. RoIs sampled for the head from the proposals plus the ground-truth boxes (64 per image, 25% at
   IoU >= 0.5 with a ground-truth box, the rest background at IoU < 0.5, as ChainerCV's
   ``ProposalTargetCreator``) -> the head's cross-entropy and smooth L1 box loss (stds 0.1, 0.1, 0.2, 0.2).

``L = L_rpn_obj + L_rpn_box + L_head_cls + L_head_box``, one backward pass: *approximate joint training*.
The gradient of the head's losses with respect to the proposal coordinates is not propagated: the RoI
boxes are constants (computed in NumPy from the RPN's outputs), so the RPN's offset branch learns only from
its own smooth-L1 term, and ``roi_align`` passes gradients to the feature map but not to the box
coordinates. The backbone receives gradients from both the RPN and the head, which is what makes the
training joint. :meth:`FasterRCNN.sample` draws the anchors and RoIs and :meth:`FasterRCNN.losses_from`
computes the four terms from a fixed sample, so a test can rebuild the same loss from PyTorch ops.

Inference (:meth:`FasterRCNN.detect`): test-time proposals (top 1,000 before NMS, 300 after), the head's
softmax scores and class-specific boxes, per-class NMS; ``timings`` collects the seconds spent in the
backbone, the RPN (head + decoding), NMS (proposal NMS + per-class NMS) and the detection head.
"""

from __future__ import annotations

import time
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.vision.models.backbone import SceneBackbone
from handgrad.vision.models.fast_rcnn import BBOX_STDS, FastRCNN, postprocess
from handgrad.vision.models.rpn import RegionProposalNetwork, check_gt_boxes
from handgrad.vision.ops import box_iou, clip_boxes_to_image, decode_boxes

__all__ = ["FasterRCNN"]


class FasterRCNN(FastRCNN):
    """``forward(images) -> (class logits, box offsets, rois)`` on the RPN's proposals; ``losses(images,
    targets, rng)`` for training; ``detect(image)`` for one ``uint8`` image."""

    def __init__(self, num_classes: int, backbone: SceneBackbone | None = None,
                 rpn: RegionProposalNetwork | None = None, pooling: str = "align", output_size: int = 7,
                 hidden: int = 256, rois_per_image: int = 64, fg_fraction: float = 0.25) -> None:
        super().__init__(num_classes, backbone, pooling, output_size, hidden)
        self.rpn = rpn if rpn is not None else RegionProposalNetwork(self.backbone.out_channels)
        self.rois_per_image, self.fg_fraction = rois_per_image, fg_fraction

    # -- shared ---------------------------------------------------------------------------------------------
    def _image_size(self, images: Tensor) -> tuple[int, int]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: images must be (N, 3, H, W), got {tuple(images.shape)}")
        size = (int(images.shape[2]), int(images.shape[3]))
        self.rpn.anchor_generator.check_image_size(size)
        return size

    def head_forward(self, feats: Tensor, rois: numpy.ndarray) -> tuple[Tensor, Tensor]:
        h = self.head(self.pool(feats, rois))
        return self.cls_score(h), self.bbox_pred(h)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, numpy.ndarray]:  # type: ignore[override]
        size = self._image_size(images)
        feats = self.backbone(images)
        logits, deltas, anchors = self.rpn(feats, size)
        rois = _stack_rois([p for p, _ in self.rpn.proposals(logits, deltas, anchors, size)])
        cls, box = self.head_forward(feats, rois)
        return cls, box, rois

    # -- training -------------------------------------------------------------------------------------------
    def sample(self, logits: Tensor, deltas: Tensor, anchors: numpy.ndarray, image_size: tuple[int, int],
               targets: list[dict[str, Any]], rng: numpy.random.Generator) -> dict[str, numpy.ndarray]:
        """The constants of one step: anchor labels/targets ``(N, M)``/``(N, M, 4)``, RoIs ``(K, 5)`` with
        their labels ``(K,)``, normalised box targets ``(K, 4)`` and matched ground-truth index ``(K,)``
        (-1 for background)."""
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{type(self).__name__}: {logits.shape[0]} images but {len(targets)} targets")
        gts = []
        for n, t in enumerate(targets):
            b = check_gt_boxes(t["boxes"], f"{type(self).__name__}: targets[{n}]", image_size)
            lab = numpy.asarray(t["labels"], dtype=numpy.int64).reshape(-1)
            if len(lab) != len(b) or (len(lab) and (lab.min() < 1 or lab.max() >= self.num_classes)):
                raise ValueError(f"{type(self).__name__}: targets[{n}]['labels'] must be {len(b)} ids in "
                                 f"1..{self.num_classes - 1}, got {lab.tolist()}")
            gts.append((b, lab))
        a_lab, a_tgt = zip(*[self.rpn.targets(anchors, b, rng) for b, _ in gts])
        props = self.rpn.proposals(logits, deltas, anchors, image_size)
        rois, labels, tgts, match = [], [], [], []
        for n, ((p, _), (b, lab)) in enumerate(zip(props, gts)):
            r, rl, rt = FastRCNN.sample_rois(p, b, lab, rng, self.rois_per_image, self.fg_fraction, 0.5, (0.0, 0.5))
            m = numpy.full(len(r), -1, dtype=numpy.int64)
            fg = rl > 0
            if fg.any():  # the ground-truth box each foreground RoI was matched to (its best IoU, as sampled)
                m[fg] = box_iou(r[fg].astype(numpy.float64), b).argmax(1)
            rois.append(numpy.concatenate([numpy.full((len(r), 1), n, numpy.float32), r], 1))
            labels.append(rl)
            tgts.append(rt)
            match.append(m)
        return {"anchor_labels": numpy.stack(a_lab), "anchor_targets": numpy.stack(a_tgt),
                "rois": numpy.concatenate(rois), "roi_labels": numpy.concatenate(labels),
                "roi_targets": numpy.concatenate(tgts), "roi_match": numpy.concatenate(match)}

    def losses_from(self, feats: Tensor, logits: Tensor, deltas: Tensor, s: dict[str, numpy.ndarray]
                    ) -> dict[str, Tensor]:
        """The four loss terms for a fixed sample ``s`` (from :meth:`sample`)."""
        obj, rbox = self.rpn.loss(logits, deltas, s["anchor_labels"], s["anchor_targets"])
        rois = s["rois"].astype(feats.dtype)
        cls_logits, box_deltas = self.head_forward(feats, rois)
        cls, box = self.loss(cls_logits, box_deltas, s["roi_labels"], s["roi_targets"])
        return {"rpn_objectness": obj, "rpn_box": rbox, "head_cls": cls, "head_box": box}

    def losses(self, images: Tensor, targets: list[dict[str, Any]], rng: numpy.random.Generator
               ) -> tuple[dict[str, Tensor], dict[str, numpy.ndarray], Tensor]:
        """``(loss terms, the sample, features)`` of one training step; the total loss is the terms' sum."""
        size = self._image_size(images)
        feats = self.backbone(images)
        logits, deltas, anchors = self.rpn(feats, size)
        s = self.sample(logits, deltas, anchors, size, targets, rng)
        return self.losses_from(feats, logits, deltas, s), s, feats

    # -- inference ------------------------------------------------------------------------------------------
    def detect(self, image: numpy.ndarray, score_thresh: float = 0.05, nms_thresh: float = 0.3,  # type: ignore[override]
               max_detections: int = 100, normalize: Any = None, timings: dict[str, float] | None = None,
               masks: bool = False) -> dict[str, numpy.ndarray]:
        """Detections ``{"boxes" (D, 4), "labels" (D,), "scores" (D,), "proposals" (P, 4)}`` on one
        ``uint8 (H, W, 3)`` image; ``timings`` (if given) accumulates backbone / rpn / nms / head seconds.
        ``masks=True`` is an error here: only :class:`~handgrad.vision.models.mask_rcnn.MaskRCNN` has a mask
        head."""
        if masks:
            raise ValueError(f"{type(self).__name__}.detect: masks=True needs a model with a mask head (MaskRCNN); "
                             f"this {type(self).__name__} predicts boxes only")
        out, _ = self._detect(image, score_thresh, nms_thresh, max_detections, normalize, timings)
        return out

    def _detect(self, image: numpy.ndarray, score_thresh: float, nms_thresh: float, max_detections: int,
                normalize: Any, timings: dict[str, float] | None) -> tuple[dict[str, numpy.ndarray], Tensor]:
        tm = timings if timings is not None else {}
        image = numpy.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{type(self).__name__}.detect: image must be (H, W, 3), got {image.shape}")
        H, W = image.shape[:2]
        self.rpn.anchor_generator.check_image_size((H, W))
        x = normalize(image) if normalize is not None else image.astype(numpy.float32).transpose(2, 0, 1) / 255.0
        was = self.training
        self.eval()
        try:
            with no_grad():
                t0 = time.perf_counter()
                feats = self.backbone(Tensor(x[None]))
                t1 = time.perf_counter()
                logits, deltas, anchors = self.rpn(feats, (H, W))
                props, _ = self.rpn.proposals(logits, deltas, anchors, (H, W))[0]
                t2 = time.perf_counter()
                rois = _stack_rois([props]).astype(feats.dtype)
                if len(props):
                    cls_logits, box_deltas = self.head_forward(feats, rois)
                    probs = F.softmax(cls_logits, dim=1).numpy()
                    boxes = decode_boxes(box_deltas.numpy().astype(numpy.float64), props, stds=BBOX_STDS)
                    boxes = clip_boxes_to_image(boxes.reshape(-1, self.num_classes, 4), (H, W))
                t3 = time.perf_counter()
                if len(props):
                    out = postprocess(boxes, probs, score_thresh, nms_thresh, max_detections)
                else:
                    out = {"boxes": numpy.zeros((0, 4), numpy.float32), "labels": numpy.zeros(0, numpy.int64),
                           "scores": numpy.zeros(0, numpy.float32)}
                t4 = time.perf_counter()
        finally:
            self.train(was)
        tm["backbone"] = tm.get("backbone", 0.0) + (t1 - t0)
        tm["rpn"] = tm.get("rpn", 0.0) + (t2 - t1)
        tm["head"] = tm.get("head", 0.0) + (t3 - t2)
        tm["nms"] = tm.get("nms", 0.0) + (t4 - t3)
        out["proposals"] = props.astype(numpy.float32)
        return out, feats


def _stack_rois(props: list[numpy.ndarray]) -> numpy.ndarray:
    """Per-image ``(P_n, 4)`` boxes -> ``(sum P_n, 5)`` ``[batch_index, x1, y1, x2, y2]`` float32."""
    rows = [numpy.concatenate([numpy.full((len(p), 1), n, numpy.float64), numpy.asarray(p, numpy.float64)], 1)
            for n, p in enumerate(props)]
    return numpy.concatenate(rows).astype(numpy.float32) if rows else numpy.zeros((0, 5), numpy.float32)
