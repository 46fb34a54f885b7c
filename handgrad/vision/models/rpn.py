"""Region proposal network (Ren et al. 2015), as in ChainerCV's ``links/model/faster_rcnn`` and torchvision.

* :class:`RPNHead`: a 3x3 convolution + ReLU, then two 1x1 convolutions: one objectness logit and four box
  offsets per anchor: ``(N, C, H, W) -> logits (N, H*W*A), deltas (N, H*W*A, 4)`` (anchor order of
  :mod:`handgrad.vision.anchors`: index ``(i * W + j) * A + a``).
* :func:`anchor_targets` (ChainerCV's ``AnchorTargetCreator``): an anchor is positive if its IoU with some
  ground-truth box is ``>= 0.7`` or it is (one of) the best anchor(s) of a ground-truth box, negative if its
  best IoU is ``< 0.3``, ignored otherwise; 256 sampled per image, at most half positive (extra positives and
  negatives drawn at random become "ignored", label -1). Regression targets: the raw box coding
  (:func:`~handgrad.vision.ops.encode_boxes`, means 0, stds 1: torchvision's RPN ``BoxCoder((1, 1, 1, 1))``).
* :func:`create_proposals` (``ProposalCreator``): decode every anchor's offsets, clip to the image, drop boxes
  under ``min_size``, keep the ``pre_nms_top_n`` best-scored, NMS at 0.7, keep ``post_nms_top_n``
  (more in training than at test, as in the paper: 2,000/300 there, 600/300 here on 256 px scenes).
* :meth:`RegionProposalNetwork.loss`: ``L = (1/N_s) sum_s BCE(p_s, p*_s) + (1/N_s) sum_s p*_s
  smoothL1_beta(t_s - t*_s)`` over the ``N_s`` sampled anchors ``s`` (torchvision's normalisation; beta =
  1/9, ChainerCV's sigma = 3).

Proposals are computed from detached values (NumPy): in approximate joint training no gradient flows
through the proposal boxes into the RPN's offsets (see :mod:`handgrad.vision.models.faster_rcnn`).
"""

from __future__ import annotations

from typing import Any

import numpy

import handgrad.functional as F
import handgrad.nn as nn
from handgrad.engine.tensor import Tensor
from handgrad.vision.anchors import AnchorGenerator
from handgrad.vision.ops import box_iou, check_boxes, clip_boxes_to_image, decode_boxes, encode_boxes, nms
from handgrad.vision.ops.boxes import remove_small_boxes

__all__ = ["RPNHead", "RegionProposalNetwork", "anchor_targets", "create_proposals", "check_gt_boxes",
           "RPN_BETA"]

RPN_BETA = 1.0 / 9.0


def check_gt_boxes(boxes: Any, op: str, image_size: tuple[int, int] | None = None) -> numpy.ndarray:
    """Validate annotation boxes ``(G, 4)``: finite, ``x2 > x1`` and ``y2 > y1`` (a zero-area box has no
    box coding: ``log 0``); returns them as float64. Raises ``ValueError`` naming ``op`` and the box."""
    b = numpy.asarray(boxes.numpy() if isinstance(boxes, Tensor) else boxes, dtype=numpy.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 4)
    check_boxes(b, op, "gt_boxes")
    bad = numpy.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{op}: gt_boxes[{i}] = {b[i].tolist()} is degenerate (zero width or height; "
                         f"{bad.size} such boxes): drop it from the annotations")
    if image_size is not None and len(b):
        h, w = image_size
        if b[:, 2].min() <= 0 or b[:, 3].min() <= 0 or b[:, 0].max() >= w or b[:, 1].max() >= h:
            i = int(numpy.flatnonzero((b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w) | (b[:, 1] >= h))[0])
            raise ValueError(f"{op}: gt_boxes[{i}] = {b[i].tolist()} lies outside the {h}x{w} image")
    return b


def anchor_targets(anchors: numpy.ndarray, gt_boxes: numpy.ndarray, rng: numpy.random.Generator,
                   num_sample: int = 256, pos_iou: float = 0.7, neg_iou: float = 0.3, pos_fraction: float = 0.5
                   ) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Labels ``(M,)`` int64 (1 positive, 0 negative, -1 ignored) and offsets ``(M, 4)`` float64 (zero
    except at positives) of ``M`` anchors for one image with ground-truth boxes ``(G, 4)`` (may be 0)."""
    anchors = numpy.asarray(anchors, dtype=numpy.float64)
    gt = check_gt_boxes(gt_boxes, "anchor_targets")
    M = len(anchors)
    labels = numpy.full(M, -1, dtype=numpy.int64)
    targets = numpy.zeros((M, 4), dtype=numpy.float64)
    if len(gt):
        iou = box_iou(anchors, gt)  # (M, G)
        argmax = iou.argmax(1)
        best = iou[numpy.arange(M), argmax]
        labels[best < neg_iou] = 0
        gt_best = iou.max(0)  # (G,)
        # every anchor tied for the best IoU of some ground-truth box (boxes no anchor touches excepted)
        ties = numpy.flatnonzero(((iou == gt_best[None]) & (gt_best[None] > 0)).any(1))
        labels[ties] = 1
        labels[best >= pos_iou] = 1
    else:
        argmax = numpy.zeros(M, dtype=numpy.int64)
        labels[:] = 0
    n_pos = int(num_sample * pos_fraction)
    pos = numpy.flatnonzero(labels == 1)
    if len(pos) > n_pos:
        labels[rng.choice(pos, len(pos) - n_pos, replace=False)] = -1
    n_neg = num_sample - int((labels == 1).sum())
    neg = numpy.flatnonzero(labels == 0)
    if len(neg) > n_neg:
        labels[rng.choice(neg, len(neg) - n_neg, replace=False)] = -1
    pos = numpy.flatnonzero(labels == 1)
    if len(pos):
        targets[pos] = encode_boxes(gt[argmax[pos]], anchors[pos])
    return labels, targets


def create_proposals(deltas: numpy.ndarray, scores: numpy.ndarray, anchors: numpy.ndarray,
                     image_size: tuple[int, int], pre_nms_top_n: int = 3000, post_nms_top_n: int = 300,
                     nms_thresh: float = 0.7, min_size: float = 4.0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Proposals ``(P, 4)`` float64 and their objectness scores ``(P,)`` (decreasing) for one image from the
    RPN's ``deltas (M, 4)`` and ``scores (M,)`` at ``anchors (M, 4)``: decode, clip, remove boxes under
    ``min_size`` px, top ``pre_nms_top_n`` by score, NMS at ``nms_thresh``, top ``post_nms_top_n``."""
    d = numpy.asarray(deltas, dtype=numpy.float64).reshape(-1, 4)
    s = numpy.asarray(scores, dtype=numpy.float64).reshape(-1)
    if len(d) != len(anchors) or len(s) != len(anchors):
        raise ValueError(f"create_proposals: deltas {d.shape}, scores {s.shape} and anchors "
                         f"{numpy.shape(anchors)} must have one row per anchor")
    boxes = clip_boxes_to_image(decode_boxes(d, numpy.asarray(anchors, dtype=numpy.float64)), image_size)
    keep = remove_small_boxes(boxes, min_size)
    boxes, s = boxes[keep], s[keep]
    order = numpy.argsort(-s, kind="stable")[:pre_nms_top_n]
    boxes, s = boxes[order], s[order]
    keep = nms(boxes, s, nms_thresh)[:post_nms_top_n]
    return boxes[keep], s[keep]


class RPNHead(nn.Module):
    """``(N, C, H, W) -> (logits (N, H*W*A), deltas (N, H*W*A, 4))``; weights N(0, 0.01), biases 0 (the
    paper's and torchvision's initialisation)."""

    def __init__(self, in_channels: int, num_anchors: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = mid_channels or in_channels
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid, 4 * num_anchors, 1)
        for m in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = F.relu(self.conv(x))
        n, _, h, w = t.shape
        a = self.num_anchors
        logits = self.cls_logits(t).permute(0, 2, 3, 1).reshape(n, h * w * a)
        deltas = self.bbox_pred(t).reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """The RPN: head, anchors, targets, proposals and loss. ``forward(features, image_size) -> (logits,
    deltas, anchors)``; :meth:`proposals` uses the training or test top-N by ``self.training``."""

    def __init__(self, in_channels: int, anchor_generator: AnchorGenerator | None = None,
                 mid_channels: int | None = None, pre_nms_top_n: tuple[int, int] = (3000, 1000),
                 post_nms_top_n: tuple[int, int] = (600, 300), nms_thresh: float = 0.7, min_size: float = 4.0,
                 num_sample: int = 256, pos_fraction: float = 0.5, fg_iou: float = 0.7, bg_iou: float = 0.3) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator or AnchorGenerator()
        self.head = RPNHead(in_channels, self.anchor_generator.num_anchors, mid_channels)
        self.pre_nms_top_n, self.post_nms_top_n = tuple(pre_nms_top_n), tuple(post_nms_top_n)
        self.nms_thresh, self.min_size = nms_thresh, min_size
        self.num_sample, self.pos_fraction, self.fg_iou, self.bg_iou = num_sample, pos_fraction, fg_iou, bg_iou

    def forward(self, features: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor, numpy.ndarray]:
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(image_size, tuple(features.shape[2:]))
        return logits, deltas, anchors

    def targets(self, anchors: numpy.ndarray, gt_boxes: numpy.ndarray, rng: numpy.random.Generator
                ) -> tuple[numpy.ndarray, numpy.ndarray]:
        return anchor_targets(anchors, gt_boxes, rng, self.num_sample, self.fg_iou, self.bg_iou, self.pos_fraction)

    def proposals(self, logits: Any, deltas: Any, anchors: numpy.ndarray, image_size: tuple[int, int]
                  ) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """Per image ``(boxes (P, 4), scores (P,))`` from detached logits/deltas (constants for the head)."""
        lg = logits.numpy() if isinstance(logits, Tensor) else numpy.asarray(logits)
        dl = deltas.numpy() if isinstance(deltas, Tensor) else numpy.asarray(deltas)
        k = 0 if self.training else 1
        return [create_proposals(dl[n], lg[n], anchors, image_size, self.pre_nms_top_n[k], self.post_nms_top_n[k],
                                 self.nms_thresh, self.min_size) for n in range(len(lg))]

    @staticmethod
    def loss(logits: Tensor, deltas: Tensor, labels: numpy.ndarray, targets: numpy.ndarray,
             beta: float = RPN_BETA) -> tuple[Tensor, Tensor]:
        """``(objectness loss, box loss)`` for ``labels (N, M)`` in {-1, 0, 1} and ``targets (N, M, 4)``,
        both normalised by the number of sampled anchors (labels >= 0) over the batch."""
        labels = numpy.asarray(labels)
        if labels.shape != tuple(logits.shape) or numpy.shape(targets) != tuple(deltas.shape):
            raise ValueError(f"RegionProposalNetwork.loss: labels {labels.shape} / targets {numpy.shape(targets)} "
                             f"must match logits {tuple(logits.shape)} / deltas {tuple(deltas.shape)}")
        dt = logits.dtype
        sampled = (labels >= 0).astype(dt)
        n = max(1.0, float(sampled.sum()))
        obj = F.binary_cross_entropy_with_logits(logits, Tensor((labels == 1).astype(dt)), weight=Tensor(sampled),
                                                 reduction="sum") / n
        pos = (labels == 1).astype(dt)[..., None]
        box = F.smooth_l1_loss(deltas * Tensor(pos), Tensor(numpy.asarray(targets, dtype=dt) * pos),
                               reduction="sum", beta=beta) / n
        return obj, box


