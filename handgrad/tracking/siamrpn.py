"""Siamese RPN tracker (Li, Yan, Wu, Zhu & Hu, "High performance visual tracking with Siamese region
proposal network", CVPR 2018), with SiamRPN++'s depth-wise correlation as the default.

Geometry (SiamFC's): around a box ``(w, h)`` with context ``p = (w + h) / 2`` the exemplar is the square of
side ``s_z = sqrt((w + p)(h + p))`` resized to ``Z`` px, the search region the square of side
``s_x = s_z X / Z`` resized to ``X`` px (same scale). A shared CNN (valid convolutions, total stride 4)
turns them into ``4 x 4`` and ``12 x 12`` maps; the template is correlated with the search map
(``xcorr="depthwise"``: per channel, then 1x1 convolutions; ``xcorr="up"``: the original up-channel form,
the template turned into ``k`` (scores) and ``4k`` (offsets) full kernels, :mod:`handgrad.tracking.xcorr`),
giving on a ``9 x 9`` grid ``k`` anchor scores (``k = len(ratios)`` aspect ratios; one sigmoid logit per
anchor, equivalent to the paper's 2-way softmax) and ``4k`` box offsets
``(dx / w_a, dy / h_a, log(w / w_a), log(h / h_a))`` (:func:`handgrad.vision.ops.encode_boxes`).

Training (:func:`make_example`, :func:`siamrpn_loss`): pairs of frames of a generated sequence, the search
crop centred at the object moved by a random offset and scale; anchors with IoU > 0.6 are positives,
< 0.3 negatives (at most 16 positives, 64 anchors in all per pair); loss = BCE on the sampled anchors +
smooth L1 on the positives' offsets.

Tracking: the search region at the previous centre and size; each anchor's score is multiplied by the
paper's scale and ratio penalty ``exp(-k_p (max(r/r', r'/r) max(s/s', s'/s) - 1))`` (``r`` aspect ratio, ``s``
the padded size), blended with a cosine window (``window_influence``), and the best anchor's box is taken
for the centre while the size moves towards it at rate ``lr * penalty * score`` (box smoothing).

Sizes for CPU training (the defaults): ``Z = 32``, ``X = 64`` (the paper: 127 and 255), channels 16/32/32 and
32 in the head (the paper: AlexNet, 256), 3 ratios (0.5, 1, 2; the paper: 5): 22 k weights (depth-wise; 33 k
up-channel), a training step of 32 pairs in about a quarter of a second on one core. The search region spans
twice the exemplar, so the object may move about ``s_z / 2`` per frame (the 9x9 grid's step is ``s_x / 16``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import handgrad as hg
import handgrad.functional as F
from handgrad import nn
from handgrad.engine.grad_mode import no_grad
from handgrad.tracking._image import check_box, check_frame, subwindow
from handgrad.tracking.xcorr import xcorr_depthwise, xcorr_up
from handgrad.vision.ops import box_iou, decode_boxes, encode_boxes

__all__ = ["SiamRPN", "SiamRPNNet", "make_anchors", "make_example", "siamrpn_loss"]

STRIDE = 4


def _backbone(widths: Sequence[int]) -> nn.Module:
    c1, c2, c3 = widths
    return nn.Sequential(nn.Conv2d(3, c1, 5, stride=2), nn.ReLU(), nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c2, c3, 3), nn.ReLU())


def feature_size(side: int) -> int:
    """Output side of the backbone for an input side (valid convolutions: 5/2, 3, pool 2, 3)."""
    return ((side - 5) // 2 + 1 - 2) // 2 - 2


class SiamRPNNet(nn.Module):
    """``forward(template (B, 3, Z, Z), search (B, 3, X, X)) -> (scores (B, k, S, S), offsets (B, 4k, S, S))``."""

    def __init__(self, widths: Sequence[int] = (16, 32, 32), channels: int = 32, anchors: int = 3,
                 xcorr: str = "depthwise") -> None:
        super().__init__()
        if xcorr not in ("depthwise", "up"):
            raise ValueError(f"SiamRPNNet: xcorr must be 'depthwise' or 'up', got {xcorr!r}")
        self.xcorr, self.k, self.c = xcorr, int(anchors), int(channels)
        c3 = widths[2]
        self.backbone = _backbone(widths)
        if xcorr == "depthwise":
            self.cls_z, self.cls_x = nn.Conv2d(c3, channels, 1), nn.Conv2d(c3, channels, 1)
            self.reg_z, self.reg_x = nn.Conv2d(c3, channels, 1), nn.Conv2d(c3, channels, 1)
            self.cls_head = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, self.k, 1))
            self.reg_head = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                          nn.Conv2d(channels, 4 * self.k, 1))
        else:
            self.cls_z, self.cls_x = nn.Conv2d(c3, channels * self.k, 1), nn.Conv2d(c3, channels, 1)
            self.reg_z, self.reg_x = nn.Conv2d(c3, channels * 4 * self.k, 1), nn.Conv2d(c3, channels, 1)
            self.reg_adjust = nn.Conv2d(4 * self.k, 4 * self.k, 1)

    def forward(self, template: Any, search: Any) -> tuple[Any, Any]:
        fz, fx = self.backbone(template), self.backbone(search)
        if self.xcorr == "depthwise":
            cls = self.cls_head(xcorr_depthwise(self.cls_x(fx), self.cls_z(fz)))
            reg = self.reg_head(xcorr_depthwise(self.reg_x(fx), self.reg_z(fz)))
            return cls, reg
        b, _, h, w = fz.shape
        kc = self.cls_z(fz).reshape(b, self.k, self.c, h, w)
        kr = self.reg_z(fz).reshape(b, 4 * self.k, self.c, h, w)
        return xcorr_up(self.cls_x(fx), kc), self.reg_adjust(xcorr_up(self.reg_x(fx), kr))


def make_anchors(search: int, score_size: int, ratios: Sequence[float], base: float) -> np.ndarray:
    """``(k S S, 4)`` anchors ``(x1, y1, x2, y2)`` in search-crop pixels, ordered (ratio, row, column) like
    the flattened ``(B, k, S, S)`` score map: centres ``X/2 + STRIDE (i - S//2)``, size ``base`` with
    ``w / h = ratio``."""
    offs = search / 2 + STRIDE * (np.arange(score_size) - score_size // 2)
    cy, cx = np.meshgrid(offs, offs, indexing="ij")
    out = []
    for r in ratios:
        w, h = base * math.sqrt(r), base / math.sqrt(r)
        out.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float64)


def _context_size(w: float, h: float) -> float:
    p = (w + h) / 2
    return math.sqrt((w + p) * (h + p))


def _crop(frame: np.ndarray, center: tuple[float, float], side: float, out: int) -> np.ndarray:
    patch = subwindow(frame, center, (side, side), (out, out))
    return (patch.transpose(2, 0, 1) / 255.0 - 0.5).astype(np.float32)


def make_example(frame_a: np.ndarray, box_a: Sequence[float], frame_b: np.ndarray, box_b: Sequence[float],
                 rng: np.random.Generator, anchors: np.ndarray, template: int = 32, search: int = 64,
                 shift: float = 0.25, scale: float = 0.15, n_pos: int = 16, n_total: int = 64,
                 negative: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(z, x, labels (A,), offsets (A, 4))``: the exemplar around ``box_a`` in ``frame_a``, the search region
    around ``box_b`` moved by ``U(-shift, shift) * s_x / 2`` and scaled by ``exp(U(-scale, scale))``; labels
    1 / 0 for the sampled positive / negative anchors, -1 for the rest. ``negative=True``: ``box_b`` is
    another object (DaSiamRPN's distractor-aware pairs), so every sampled anchor is a negative."""
    xa, ya, wa, ha = box_a
    sz = _context_size(wa, ha)
    z = _crop(frame_a, (xa + wa / 2, ya + ha / 2), sz, template)
    xb, yb, wb, hb = box_b
    sx = _context_size(wb, hb) * search / template * math.exp(rng.uniform(-scale, scale))
    cx = xb + wb / 2 + rng.uniform(-shift, shift) * sx / 2
    cy = yb + hb / 2 + rng.uniform(-shift, shift) * sx / 2
    x = _crop(frame_b, (cx, cy), sx, search)
    k = search / sx
    gt = np.array([[(xb - cx) * k + search / 2, (yb - cy) * k + search / 2,
                    (xb + wb - cx) * k + search / 2, (yb + hb - cy) * k + search / 2]])
    iou = np.asarray(box_iou(anchors, gt))[:, 0]
    labels = np.full(len(anchors), -1.0, np.float32)
    if negative:
        labels[rng.permutation(len(anchors))[:n_total]] = 0.0
        return z, x, labels, np.zeros((len(anchors), 4), np.float32)
    pos = np.flatnonzero(iou > 0.6)
    if len(pos) == 0:  # the best anchor stands in (the object is always somewhere in the search region)
        pos = np.array([int(np.argmax(iou))])
    pos = rng.permutation(pos)[:n_pos]
    neg = np.flatnonzero(iou < 0.3)
    neg = rng.permutation(neg)[: n_total - len(pos)]
    labels[pos], labels[neg] = 1.0, 0.0
    offsets = np.asarray(encode_boxes(np.repeat(gt, len(anchors), 0), anchors)).astype(np.float32)
    return z, x, labels, offsets


def _flat(cls: Any, reg: Any) -> tuple[Any, Any]:
    b, k, s, _ = cls.shape
    return cls.reshape(b, k * s * s), reg.reshape(b, k, 4, s, s).permute(0, 1, 3, 4, 2).reshape(b, k * s * s, 4)


def siamrpn_loss(output: tuple[Any, Any], target: tuple[Any, Any], reg_weight: float = 1.0) -> Any:
    """BCE with logits over the sampled anchors (label >= 0) + ``reg_weight`` x smooth L1 over the
    positives' offsets; ``target = (labels (B, A), offsets (B, A, 4))``."""
    scores, deltas = _flat(*output)
    labels, offsets = target
    lab = labels.numpy()
    dt = scores.numpy().dtype
    valid = (lab >= 0).astype(dt)
    pos = (lab > 0).astype(dt)
    y = hg.tensor(np.maximum(lab, 0).astype(dt))
    bce = F.binary_cross_entropy_with_logits(scores, y, weight=hg.tensor(valid), reduction="sum") / max(valid.sum(), 1)
    d = F.smooth_l1_loss(deltas, offsets, reduction="none", beta=1.0 / 9).sum(dim=2)
    reg = (d * hg.tensor(pos)).sum() / max(pos.sum(), 1)
    return bce + reg_weight * reg


class SiamRPN:
    """The tracker (OpenCV's protocol) around a trained :class:`SiamRPNNet`; see the module docstring.

    ``penalty_k``, ``window_influence``, ``lr``: the paper's test-time scale/ratio penalty, cosine window
    weight and size-smoothing rate (pysot's SiamRPN settings: 0.05-0.06, 0.4-0.44, 0.3-0.4).
    """

    def __init__(self, net: SiamRPNNet | None = None, template: int = 32, search: int = 64,
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), widths: Sequence[int] = (16, 32, 32),
                 channels: int = 32, xcorr: str = "depthwise", penalty_k: float = 0.055,
                 window_influence: float = 0.42, lr: float = 0.35) -> None:
        self.config = {"template": int(template), "search": int(search), "ratios": [float(r) for r in ratios],
                       "widths": list(widths), "channels": int(channels), "xcorr": xcorr}
        self.net = net if net is not None else SiamRPNNet(widths, channels, len(ratios), xcorr)
        self.template, self.search = int(template), int(search)
        self.score_size = feature_size(search) - feature_size(template) + 1
        self.anchors = make_anchors(search, self.score_size, ratios, base=template / 2)
        self.penalty_k, self.window_influence, self.lr = float(penalty_k), float(window_influence), float(lr)
        win = np.outer(np.hanning(self.score_size + 2)[1:-1], np.hanning(self.score_size + 2)[1:-1])
        self.window = np.tile(win.ravel(), len(ratios))

    def save(self, path: str) -> None:
        hg.save({"kind": "siamrpn", "config": self.config, "state_dict": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str, **test_time: float) -> SiamRPN:
        obj = hg.load(path)
        if not isinstance(obj, dict) or obj.get("kind") != "siamrpn":
            raise ValueError(f"SiamRPN.load: {path} holds no siamrpn weights")
        c = obj["config"]
        t = cls(None, c["template"], c["search"], c["ratios"], c["widths"], c["channels"], c["xcorr"], **test_time)
        t.net.load_state_dict(obj["state_dict"])
        return t

    def init(self, frame: np.ndarray, box: Sequence[float]) -> bool:
        frame = check_frame(frame, "SiamRPN.init")
        x, y, w, h = check_box(box, frame.shape, "SiamRPN.init")
        self._center, self._size = (x + w / 2, y + h / 2), (w, h)
        z = _crop(frame, self._center, _context_size(w, h), self.template)
        self.net.eval()
        self._z = hg.tensor(z[None])
        self.last_score = float("nan")
        return True

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, float, float, float]]:
        if not hasattr(self, "_z"):
            raise RuntimeError("SiamRPN.update: call init(frame, box) first")
        frame = check_frame(frame, "SiamRPN.update")
        w, h = self._size
        sx = _context_size(w, h) * self.search / self.template
        x = _crop(frame, self._center, sx, self.search)
        with no_grad():
            cls, reg = self.net(self._z, hg.tensor(x[None]))
            scores, deltas = _flat(cls, reg)
        score = 1.0 / (1.0 + np.exp(-scores.numpy()[0].astype(np.float64)))
        boxes = np.asarray(decode_boxes(deltas.numpy()[0].astype(np.float64), self.anchors))
        k = self.search / sx  # crop pixels per image pixel
        bw, bh = (boxes[:, 2] - boxes[:, 0]) / k, (boxes[:, 3] - boxes[:, 1]) / k
        bw, bh = np.maximum(bw, 1e-3), np.maximum(bh, 1e-3)

        def padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            p = (a + b) / 2
            return np.sqrt((a + p) * (b + p))

        s_c = padded(bw, bh) / _context_size(w, h)
        r_c = (w / h) / (bw / bh)
        penalty = np.exp(-(np.maximum(s_c, 1 / s_c) * np.maximum(r_c, 1 / r_c) - 1) * self.penalty_k)
        pscore = penalty * score * (1 - self.window_influence) + self.window * self.window_influence
        best = int(np.argmax(pscore))
        cxc = (boxes[best, 0] + boxes[best, 2]) / 2 - self.search / 2
        cyc = (boxes[best, 1] + boxes[best, 3]) / 2 - self.search / 2
        lr = penalty[best] * score[best] * self.lr
        cx, cy = self._center[0] + cxc / k, self._center[1] + cyc / k
        nw, nh = w * (1 - lr) + bw[best] * lr, h * (1 - lr) + bh[best] * lr
        H, W = frame.shape[:2]
        self._center = (min(max(cx, 0.0), float(W)), min(max(cy, 0.0), float(H)))
        self._size = (min(max(nw, 4.0), float(W)), min(max(nh, 4.0), float(H)))
        self.last_score = float(score[best])
        return True, self.box

    @property
    def box(self) -> tuple[float, float, float, float]:
        (cx, cy), (w, h) = self._center, self._size
        return (float(cx - w / 2), float(cy - h / 2), float(w), float(h))
