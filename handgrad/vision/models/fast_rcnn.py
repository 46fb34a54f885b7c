"""Fast R-CNN (Girshick 2015): the image passes through the CNN once; each proposal's features are pooled
from the shared feature map (``roi_pool`` or ``roi_align``) and a fully connected head predicts class
scores (softmax over K + 1, 0 = background) and class-specific box offsets.

Training (:meth:`FastRCNN.sample_rois`, :meth:`FastRCNN.loss`), as in the paper: mini-batches of R RoIs
per image, a quarter foreground (IoU >= 0.5 with a ground-truth box, the ground-truth boxes included) and
the rest background (IoU in [0.1, 0.5)); the multi-task loss

    L = CE(p, u) + lambda [u >= 1] sum_i smoothL1(t^u_i - v_i),

with ``v`` the box coding of :func:`~handgrad.vision.ops.encode_boxes` normalised by stds (0.1, 0.1, 0.2,
0.2), the regression term averaged over all RoIs of the batch. Inference (:meth:`FastRCNN.detect`):
softmax scores, class-specific decoded boxes clipped to the image, per-class NMS.
"""

from __future__ import annotations

from typing import Any

import numpy

import handgrad.functional as F
import handgrad.nn as nn
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.vision.models.backbone import SceneBackbone
from handgrad.vision.ops import batched_nms, box_iou, clip_boxes_to_image, decode_boxes, encode_boxes
from handgrad.vision.ops.roi_align import roi_align
from handgrad.vision.ops.roi_pool import roi_pool

__all__ = ["FastRCNN", "BBOX_STDS"]

BBOX_STDS = (0.1, 0.1, 0.2, 0.2)


class FastRCNN(nn.Module):
    """``forward(images (N, 3, H, W), rois (K, 5)) -> (class logits (K, C), box offsets (K, 4C))``."""

    def __init__(self, num_classes: int, backbone: SceneBackbone | None = None, pooling: str = "align",
                 output_size: int = 7, hidden: int = 256) -> None:
        super().__init__()
        if pooling not in ("align", "pool"):
            raise ValueError(f"FastRCNN: pooling must be 'align' or 'pool', got {pooling!r}")
        self.num_classes = num_classes
        self.pooling = pooling
        self.output_size = output_size
        self.backbone = backbone if backbone is not None else SceneBackbone()
        c = self.backbone.out_channels
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * output_size * output_size, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.cls_score = nn.Linear(hidden, num_classes)
        self.bbox_pred = nn.Linear(hidden, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def pool(self, feats: Tensor, rois: numpy.ndarray) -> Tensor:
        scale = 1.0 / self.backbone.stride
        if self.pooling == "align":
            return roi_align(feats, rois, self.output_size, scale, sampling_ratio=2, aligned=True)
        return roi_pool(feats, rois, self.output_size, scale)

    def forward(self, images: Tensor, rois: numpy.ndarray) -> tuple[Tensor, Tensor]:
        h = self.head(self.pool(self.backbone(images), rois))
        return self.cls_score(h), self.bbox_pred(h)

    # -- training ------------------------------------------------------------------------------------------
    @staticmethod
    def sample_rois(proposals: numpy.ndarray, gt_boxes: numpy.ndarray, gt_labels: numpy.ndarray,
                    rng: numpy.random.Generator, num: int = 64, fg_fraction: float = 0.25, fg_iou: float = 0.5,
                    bg_iou: tuple[float, float] = (0.1, 0.5)) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """RoIs ``(R, 4)``, labels ``(R,)`` (0 = background) and normalised regression targets ``(R, 4)``
        for one image, sampled by IoU as in the paper (ground-truth boxes join the candidates)."""
        cand = numpy.concatenate([proposals.reshape(-1, 4), gt_boxes.reshape(-1, 4)]).astype(numpy.float64)
        if len(gt_boxes):
            iou = box_iou(cand, gt_boxes.astype(numpy.float64))
            best, arg = iou.max(1), iou.argmax(1)
        else:
            best, arg = numpy.zeros(len(cand)), numpy.zeros(len(cand), dtype=numpy.int64)
        fg = numpy.flatnonzero(best >= fg_iou)
        bg = numpy.flatnonzero((best < bg_iou[1]) & (best >= bg_iou[0]))
        if len(bg) == 0:  # an image with nothing near the objects: take any low-overlap box
            bg = numpy.flatnonzero(best < bg_iou[1])
        n_fg = min(len(fg), int(round(num * fg_fraction)))
        fg = rng.choice(fg, n_fg, replace=False) if n_fg else fg[:0]
        n_bg = min(len(bg), num - n_fg)
        bg = rng.choice(bg, n_bg, replace=False) if n_bg else bg[:0]
        keep = numpy.concatenate([fg, bg]).astype(numpy.int64)
        rois = cand[keep]
        labels = numpy.zeros(len(keep), dtype=numpy.int64)
        labels[:n_fg] = gt_labels[arg[fg]] if n_fg else labels[:0]
        targets = numpy.zeros((len(keep), 4), dtype=numpy.float32)
        if n_fg:
            targets[:n_fg] = encode_boxes(gt_boxes[arg[fg]].astype(numpy.float64), rois[:n_fg], stds=BBOX_STDS)
        return rois.astype(numpy.float32), labels, targets

    def loss(self, logits: Tensor, deltas: Tensor, labels: numpy.ndarray, targets: numpy.ndarray,
             box_weight: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(classification loss, box loss)`` of the multi-task objective."""
        k = len(labels)
        cls = F.cross_entropy(logits, Tensor(labels))
        mask = numpy.zeros((k, 4 * self.num_classes), dtype=deltas.dtype)
        full = numpy.zeros((k, 4 * self.num_classes), dtype=deltas.dtype)
        for j in range(4):
            mask[numpy.arange(k), 4 * labels + j] = labels > 0
            full[numpy.arange(k), 4 * labels + j] = targets[:, j]
        box = F.smooth_l1_loss(deltas * Tensor(mask), Tensor(full * mask), reduction="sum", beta=1.0) / max(1, k)
        return cls, box * box_weight

    # -- inference -----------------------------------------------------------------------------------------
    def detect(self, image: numpy.ndarray, proposals: numpy.ndarray, score_thresh: float = 0.05,
               nms_thresh: float = 0.3, max_detections: int = 100, normalize: Any = None) -> dict[str, numpy.ndarray]:
        """Detections ``{"boxes" (D, 4), "labels" (D,), "scores" (D,)}`` on one ``uint8 (H, W, 3)`` image
        given its proposals ``(P, 4)``; ``normalize`` maps the image to the network's input ``(3, H, W)``."""
        H, W = image.shape[:2]
        x = normalize(image) if normalize is not None else image.astype(numpy.float32).transpose(2, 0, 1) / 255.0
        props = numpy.asarray(proposals, dtype=numpy.float32).reshape(-1, 4)
        if len(props) == 0:
            return {"boxes": numpy.zeros((0, 4), numpy.float32), "labels": numpy.zeros(0, numpy.int64),
                    "scores": numpy.zeros(0, numpy.float32)}
        rois = numpy.concatenate([numpy.zeros((len(props), 1), numpy.float32), props], 1)
        was = self.training
        self.eval()
        with no_grad():
            logits, deltas = self(Tensor(x[None]), rois)
        self.train(was)
        probs = F.softmax(logits, dim=1).numpy()
        boxes = decode_boxes(deltas.numpy().astype(numpy.float64), props.astype(numpy.float64), stds=BBOX_STDS)
        boxes = clip_boxes_to_image(boxes.reshape(-1, self.num_classes, 4), (H, W))
        return postprocess(boxes, probs, score_thresh, nms_thresh, max_detections)


def postprocess(boxes: numpy.ndarray, probs: numpy.ndarray, score_thresh: float, nms_thresh: float,
                max_detections: int) -> dict[str, numpy.ndarray]:
    """Per-class thresholding and NMS of class-specific boxes ``(P, C, 4)`` with scores ``(P, C)``."""
    C = probs.shape[1]
    b = boxes[:, 1:].reshape(-1, 4)
    s = probs[:, 1:].reshape(-1)
    c = numpy.tile(numpy.arange(1, C), len(probs))
    ok = (s > score_thresh) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, s, c = b[ok], s[ok], c[ok]
    keep = batched_nms(b, s, c, nms_thresh)[:max_detections]
    return {"boxes": b[keep].astype(numpy.float32), "labels": c[keep].astype(numpy.int64),
            "scores": s[keep].astype(numpy.float32)}
