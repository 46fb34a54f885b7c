"""Mask R-CNN (He et al. 2017): Faster R-CNN plus a small fully convolutional mask head that predicts, for
each foreground RoI, one ``m x m`` binary mask per class.

* :class:`MaskHead`: ``roi_align`` features ``(K, C, s, s)`` (s = 14, aligned, sampling ratio 2) -> ``n``
  3x3 convolutions + ReLU -> a 2x2 stride-2 transposed convolution + ReLU -> a 1x1 convolution to
  ``num_classes`` logits: ``(K, num_classes, 2s, 2s)``.
* Targets (:func:`mask_targets`, torchvision's ``project_masks_on_boxes``): each foreground RoI's matched
  ground-truth instance mask resampled into the RoI by ``roi_align`` on the mask itself (output 2s x 2s,
  spatial scale 1), thresholded at 0.5.
* Loss (:func:`mask_loss`): ``L_mask = mean over foreground RoIs k and pixels (i, j) of
  BCE(sigmoid(z[k, u_k, i, j]), y[k, i, j])`` with ``u_k`` the RoI's ground-truth class: only the mask of the
  ground-truth class enters the loss (no competition between classes; the classification branch picks
  the class). Added to Faster R-CNN's four terms; the mask head runs on the sampled foreground RoIs only.
* Test time (:meth:`MaskRCNN.detect`): the mask head runs on the final detections' boxes, the predicted
  class's channel goes through the sigmoid and is pasted into the image
  (:func:`~handgrad.vision.mask.paste_mask_in_image`: bilinear interpolation with the mask's cells centred
  where ``roi_align`` sampled the targets, >= 0.5).
"""

from __future__ import annotations

import time
from typing import Any

import numpy

import handgrad.functional as F
import handgrad.nn as nn
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.vision.mask import paste_mask_in_image
from handgrad.vision.models.backbone import SceneBackbone
from handgrad.vision.models.faster_rcnn import FasterRCNN
from handgrad.vision.models.rpn import RegionProposalNetwork
from handgrad.vision.ops.roi_align import roi_align

__all__ = ["MaskHead", "MaskRCNN", "mask_targets", "mask_loss"]


class MaskHead(nn.Module):
    """``(K, in_channels, s, s) -> (K, num_classes, 2s, 2s)`` mask logits."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128, num_convs: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
            c = channels
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(c, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(x))))


def mask_targets(gt_masks: numpy.ndarray, rois: numpy.ndarray, match: numpy.ndarray, size: int) -> numpy.ndarray:
    """``(K, size, size)`` float 0/1 targets: ground-truth mask ``match[k]`` of ``gt_masks (G, H, W)`` inside
    box ``rois[k] = [x1, y1, x2, y2]``, bilinearly resampled (``roi_align``, aligned) and thresholded at 0.5."""
    m = numpy.asarray(gt_masks)
    if m.ndim != 3:
        raise ValueError(f"mask_targets: gt_masks must be (G, H, W), got {m.shape}")
    if len(rois) == 0:
        return numpy.zeros((0, size, size))
    if int(numpy.max(match)) >= len(m) or int(numpy.min(match)) < 0:
        raise ValueError(f"mask_targets: match indices {numpy.unique(match).tolist()} outside 0..{len(m) - 1}")
    r = numpy.concatenate([numpy.asarray(match, numpy.float64)[:, None], numpy.asarray(rois, numpy.float64)], 1)
    with no_grad():
        out = roi_align(Tensor(m[:, None].astype(numpy.float64)), r, size, 1.0, sampling_ratio=2, aligned=True)
    return (out.numpy()[:, 0] >= 0.5).astype(numpy.float64)


def mask_loss(mask_logits: Tensor, labels: numpy.ndarray, targets: numpy.ndarray) -> Tensor:
    """Mean binary cross-entropy of ``mask_logits (K, C, m, m)`` at each RoI's class ``labels (K,)`` (>= 1)
    against ``targets (K, m, m)``; 0 (still a graph node) when ``K = 0``."""
    k, c = mask_logits.shape[:2]
    labels = numpy.asarray(labels, dtype=numpy.int64)
    if labels.shape != (k,) or numpy.shape(targets) != (k, *mask_logits.shape[2:]):
        raise ValueError(f"mask_loss: labels {labels.shape} and targets {numpy.shape(targets)} do not match mask "
                         f"logits {tuple(mask_logits.shape)}")
    if k == 0:
        return mask_logits.sum() * 0.0
    onehot = numpy.zeros((k, c, 1, 1), dtype=mask_logits.dtype)
    onehot[numpy.arange(k), labels] = 1.0
    z = (mask_logits * Tensor(onehot)).sum(1)  # the ground-truth class's channel, (K, m, m)
    return F.binary_cross_entropy_with_logits(z, Tensor(numpy.asarray(targets, dtype=mask_logits.dtype)))


class MaskRCNN(FasterRCNN):
    """Faster R-CNN with a mask branch; ``losses`` adds ``"mask"``, ``detect`` adds ``"masks" (D, H, W)``."""

    def __init__(self, num_classes: int, backbone: SceneBackbone | None = None,
                 rpn: RegionProposalNetwork | None = None, mask_pool: int = 14, mask_channels: int = 64,
                 mask_convs: int = 2, **kwargs: Any) -> None:
        super().__init__(num_classes, backbone, rpn, **kwargs)
        self.mask_pool, self.mask_convs, self.mask_channels = mask_pool, mask_convs, mask_channels
        self.mask_head = MaskHead(self.backbone.out_channels, num_classes, mask_channels, mask_convs)

    @property
    def mask_size(self) -> int:
        return 2 * self.mask_pool

    def mask_forward(self, feats: Tensor, rois: numpy.ndarray) -> Tensor:
        """Mask logits ``(K, num_classes, 2s, 2s)`` of RoIs ``(K, 5)``."""
        x = roi_align(feats, rois, self.mask_pool, 1.0 / self.backbone.stride, sampling_ratio=2, aligned=True)
        return self.mask_head(x)

    def sample(self, logits: Tensor, deltas: Tensor, anchors: numpy.ndarray, image_size: tuple[int, int],
               targets: list[dict[str, Any]], rng: numpy.random.Generator) -> dict[str, numpy.ndarray]:
        s = super().sample(logits, deltas, anchors, image_size, targets, rng)
        fg = numpy.flatnonzero(s["roi_labels"] > 0)
        tg = []
        for n, t in enumerate(targets):
            if "masks" not in t:
                raise ValueError(f"MaskRCNN: targets[{n}] has no 'masks' (instance masks (G, H, W) are needed to "
                                 "train the mask head)")
            gm = numpy.asarray(t["masks"])
            if gm.shape != (len(numpy.asarray(t["boxes"]).reshape(-1, 4)), *image_size):
                raise ValueError(f"MaskRCNN: targets[{n}]['masks'] must be (G, H, W) = "
                                 f"({len(t['boxes'])}, {image_size[0]}, {image_size[1]}), got {gm.shape}")
            here = fg[s["rois"][fg, 0] == n]
            tg.append(mask_targets(gm, s["rois"][here, 1:], s["roi_match"][here], self.mask_size))
        order = numpy.concatenate([fg[s["rois"][fg, 0] == n] for n in range(len(targets))])
        s["mask_rois"] = s["rois"][order]
        s["mask_labels"] = s["roi_labels"][order]
        s["mask_targets"] = numpy.concatenate(tg) if tg else numpy.zeros((0, self.mask_size, self.mask_size))
        return s

    def losses_from(self, feats: Tensor, logits: Tensor, deltas: Tensor, s: dict[str, numpy.ndarray]
                    ) -> dict[str, Tensor]:
        out = super().losses_from(feats, logits, deltas, s)
        if len(s["mask_rois"]):
            z = self.mask_forward(feats, s["mask_rois"].astype(feats.dtype))
            out["mask"] = mask_loss(z, s["mask_labels"], s["mask_targets"])
        else:
            out["mask"] = feats.sum() * 0.0
        return out

    def detect(self, image: numpy.ndarray, score_thresh: float = 0.05, nms_thresh: float = 0.3,  # type: ignore[override]
               max_detections: int = 100, normalize: Any = None, timings: dict[str, float] | None = None,
               masks: bool = True) -> dict[str, numpy.ndarray]:
        """As :meth:`FasterRCNN.detect`, plus ``"masks"`` bool ``(D, H, W)`` (``masks=False`` skips them)."""
        tm = timings if timings is not None else {}
        out, feats = self._detect(image, score_thresh, nms_thresh, max_detections, normalize, tm)
        if not masks:
            return out
        t0 = time.perf_counter()
        H, W = numpy.asarray(image).shape[:2]
        out["masks"] = self.paste_masks(feats, out["boxes"], out["labels"], (H, W))
        tm["mask"] = tm.get("mask", 0.0) + time.perf_counter() - t0
        return out

    def paste_masks(self, feats: Tensor, boxes: numpy.ndarray, labels: numpy.ndarray, image_size: tuple[int, int]
                    ) -> numpy.ndarray:
        """Bool ``(D, H, W)`` masks of one image's ``boxes (D, 4)``: the mask head on the boxes
        (``feats (1, C, h, w)``), the channel of each box's class ``labels (D,)``, sigmoid, pasted back."""
        H, W = image_size
        d = len(boxes)
        res = numpy.zeros((d, H, W), dtype=bool)
        if d == 0:
            return res
        labels = numpy.asarray(labels, dtype=numpy.int64)
        if labels.shape != (d,) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"{type(self).__name__}.paste_masks: labels must be {d} class ids in "
                             f"0..{self.num_classes - 1}, got {labels.tolist()}")
        rois = numpy.concatenate([numpy.zeros((d, 1)), numpy.asarray(boxes, numpy.float64)], 1)
        was = self.training
        self.eval()
        try:
            with no_grad():
                z = self.mask_forward(feats, rois.astype(feats.dtype)).numpy()
        finally:
            self.train(was)
        prob = 1.0 / (1.0 + numpy.exp(-z[numpy.arange(d), labels].astype(numpy.float64)))
        for i in range(d):
            res[i] = paste_mask_in_image(prob[i], boxes[i], H, W)
        return res

    def masks_for_boxes(self, image: numpy.ndarray, boxes: numpy.ndarray, labels: numpy.ndarray,
                        normalize: Any = None) -> numpy.ndarray:
        """The mask branch alone on given boxes of one ``uint8 (H, W, 3)`` image (e.g. the ground-truth boxes
        and classes: mask quality with perfect boxes, an upper bound on what the boxes allow)."""
        image = numpy.asarray(image)
        x = normalize(image) if normalize is not None else image.astype(numpy.float32).transpose(2, 0, 1) / 255.0
        was = self.training
        self.eval()
        try:
            with no_grad():
                feats = self.backbone(Tensor(x[None]))
        finally:
            self.train(was)
        return self.paste_masks(feats, boxes, labels, image.shape[:2])
