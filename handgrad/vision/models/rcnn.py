"""R-CNN (Girshick, Donahue, Darrell & Malik 2014), the deck's detector: each proposal is warped to a fixed
size and passed through the CNN; per-class linear SVMs score its features; class-specific linear box
regression refines it; per-class NMS removes duplicates.

* :class:`LinearSVM`: L2-regularised hinge-loss SVM, ``min_w 1/2 |w|^2 + C sum_i c_i max(0, 1 - y_i w.x_i)``
  (the bias is a constant feature), solved by dual coordinate descent (Hsieh et al. 2008, liblinear's
  solver, which R-CNN used): for each sample, the dual variable ``alpha_i in [0, C c_i]`` takes the step
  ``-(y_i w.x_i - 1) / |x_i|^2``, clipped, and ``w += delta alpha_i y_i x_i``. The loop runs in numba.
* :func:`train_svm_hard_negatives`: R-CNN's hard-negative mining: train on the positives and a first slice
  of the negatives, then repeatedly add the negatives of the pool that violate the margin (``w.x > -1``).
* :class:`BoxRegressor`: ridge regression from features to the offsets ``t`` of
  :func:`~handgrad.vision.ops.encode_boxes`, one per class (R-CNN's appendix C, lambda = 1000).
* :class:`RCNN`: the fine-tuned CNN (a :class:`~handgrad.vision.models.CropClassifier`) plus the SVMs and
  regressors; :meth:`RCNN.detect` runs the whole test-time pipeline on one image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.vision.models.backbone import CropClassifier, normalize_image
from handgrad.vision.models.fast_rcnn import postprocess
from handgrad.vision.ops import clip_boxes_to_image, decode_boxes

try:
    import numba

    _njit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover
    def _njit(f):  # type: ignore[no-redef]
        return f

__all__ = ["LinearSVM", "train_svm_hard_negatives", "BoxRegressor", "RCNN", "rcnn_features", "warp_regions"]


def warp_regions(img: numpy.ndarray, boxes: numpy.ndarray, size: int, context: float = 0.15) -> numpy.ndarray:
    """R-CNN's warp: each box, enlarged by ``context`` of its size on every side (clipped to the image),
    resized to ``size x size`` whatever its aspect (bilinear); returns normalised ``float32 (n, 3, size, size)``."""
    from PIL import Image

    H, W = img.shape[:2]
    pil = Image.fromarray(numpy.ascontiguousarray(img))
    out = numpy.empty((len(boxes), 3, size, size), dtype=numpy.float32)
    for j, (x1, y1, x2, y2) in enumerate(numpy.asarray(boxes, dtype=numpy.float64).reshape(-1, 4)):
        dw, dh = context * (x2 - x1), context * (y2 - y1)
        bx = (max(0.0, x1 - dw), max(0.0, y1 - dh), min(float(W), x2 + dw), min(float(H), y2 + dh))
        if bx[2] - bx[0] < 1 or bx[3] - bx[1] < 1:  # degenerate after clipping: one pixel at the corner
            x0, y0 = min(max(0.0, x1), W - 1.0), min(max(0.0, y1), H - 1.0)
            bx = (x0, y0, x0 + 1, y0 + 1)
        out[j] = normalize_image(numpy.asarray(pil.resize((size, size), Image.BILINEAR, box=bx)))
    return out


@_njit
def _dcd(x: numpy.ndarray, y: numpy.ndarray, cost: numpy.ndarray, epochs: int, order: numpy.ndarray,
         tol: float) -> numpy.ndarray:  # pragma: no cover - jitted
    n, d = x.shape
    w = numpy.zeros(d)
    alpha = numpy.zeros(n)
    q = numpy.empty(n)
    for i in range(n):
        q[i] = numpy.dot(x[i], x[i])
    for ep in range(epochs):
        max_pg = 0.0
        for k in range(n):
            i = order[ep, k]
            g = y[i] * numpy.dot(w, x[i]) - 1.0
            pg = g
            if alpha[i] <= 0.0:
                pg = min(g, 0.0)
            elif alpha[i] >= cost[i]:
                pg = max(g, 0.0)
            if pg != 0.0 and q[i] > 0:
                max_pg = max(max_pg, abs(pg))
                old = alpha[i]
                alpha[i] = min(max(old - g / q[i], 0.0), cost[i])
                w += (alpha[i] - old) * y[i] * x[i]
        if max_pg < tol:
            break
    return w


class LinearSVM:
    """Binary linear SVM (labels +1 / -1) with hinge loss; ``decision_function(x) = x.w + b``."""

    def __init__(self, C: float = 1e-3, pos_weight: float = 2.0, epochs: int = 50, tol: float = 1e-3,
                 seed: int = 0) -> None:
        if C <= 0 or pos_weight <= 0:
            raise ValueError(f"LinearSVM: C and pos_weight must be positive, got {C}, {pos_weight}")
        self.C, self.pos_weight, self.epochs, self.tol, self.seed = C, pos_weight, epochs, tol, seed
        self.w = numpy.zeros(0)
        self.b = 0.0

    def fit(self, x: numpy.ndarray, y: numpy.ndarray) -> LinearSVM:
        x = numpy.asarray(x, dtype=numpy.float64)
        y = numpy.asarray(y, dtype=numpy.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],) or not numpy.isin(y, (-1.0, 1.0)).all():
            raise ValueError(f"LinearSVM.fit: expected x (n, d) and labels +-1 (n,), got {x.shape}, {y.shape}")
        xb = numpy.concatenate([x, numpy.ones((len(x), 1))], 1)  # the bias as a constant feature
        cost = numpy.where(y > 0, self.C * self.pos_weight, self.C)
        rng = numpy.random.default_rng(self.seed)
        order = numpy.stack([rng.permutation(len(x)) for _ in range(self.epochs)]) if len(x) else \
            numpy.zeros((self.epochs, 0), dtype=numpy.int64)
        wb = _dcd(xb, y, cost, self.epochs, order.astype(numpy.int64), self.tol)
        self.w, self.b = wb[:-1], float(wb[-1])
        return self

    def decision_function(self, x: numpy.ndarray) -> numpy.ndarray:
        return numpy.asarray(x, dtype=numpy.float64) @ self.w + self.b


def train_svm_hard_negatives(pos: numpy.ndarray, neg: numpy.ndarray, rounds: int = 3, first: int = 2000,
                             per_round: int = 4000, **svm: Any) -> LinearSVM:
    """R-CNN's hard-negative mining over a pool of negative features: start with ``first`` random negatives,
    then add up to ``per_round`` pool negatives with ``w.x + b > -1`` (inside the margin) per round."""
    rng = numpy.random.default_rng(svm.get("seed", 0))
    pool = numpy.arange(len(neg))
    active = rng.permutation(pool)[:first]
    model = LinearSVM(**svm)
    for _ in range(max(1, rounds)):
        x = numpy.concatenate([pos, neg[active]])
        y = numpy.concatenate([numpy.ones(len(pos)), -numpy.ones(len(active))])
        model.fit(x, y)
        rest = numpy.setdiff1d(pool, active)
        if len(rest) == 0:
            break
        hard = rest[model.decision_function(neg[rest]) > -1.0]
        if len(hard) == 0:
            break
        active = numpy.concatenate([active, hard[:per_round]])
    return model


class BoxRegressor:
    """Per-class ridge regression ``t = [x, 1] W_k`` (``W_k`` (d + 1, 4)); classes without data keep 0."""

    def __init__(self, num_classes: int, dim: int, lam: float = 1000.0) -> None:
        self.lam = lam
        self.W = numpy.zeros((num_classes, dim + 1, 4))

    def fit(self, k: int, x: numpy.ndarray, t: numpy.ndarray) -> None:
        xb = numpy.concatenate([x, numpy.ones((len(x), 1))], 1)
        reg = self.lam * numpy.eye(xb.shape[1])
        reg[-1, -1] = 0.0  # the bias is not shrunk
        self.W[k] = numpy.linalg.solve(xb.T @ xb + reg, xb.T @ t)

    def predict(self, x: numpy.ndarray) -> numpy.ndarray:
        """``(n, d) -> (n, C, 4)`` offsets for every class."""
        xb = numpy.concatenate([x, numpy.ones((len(x), 1))], 1)
        return numpy.einsum("nd,cdf->ncf", xb, self.W)


def rcnn_features(cnn: CropClassifier, crops: numpy.ndarray, batch: int = 256) -> numpy.ndarray:
    """The CNN's features of warped crops ``(n, 3, s, s)``: the last conv map average-pooled to 2x2
    (``(n, 4 * channels)``), computed without gradients in batches."""
    out = []
    was = cnn.training
    cnn.eval()
    with no_grad():
        for i in range(0, len(crops), batch):
            f = cnn.backbone(Tensor(crops[i:i + batch]))
            out.append(F.adaptive_avg_pool2d(f, 2).flatten(1).numpy())
    cnn.train(was)
    c = cnn.backbone.out_channels * 4
    return numpy.concatenate(out).astype(numpy.float64) if out else numpy.zeros((0, c))


class RCNN:
    """The trained R-CNN: ``cnn`` (fine-tuned), ``svms[k]`` for classes 1..C-1, ``regressor``, ``feature_scale``
    (features are multiplied by it so that their mean norm is 20, R-CNN's convention)."""

    def __init__(self, cnn: CropClassifier, num_classes: int, crop_size: int) -> None:
        self.cnn = cnn
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.svms: list[LinearSVM | None] = [None] * num_classes
        self.regressor = BoxRegressor(num_classes, cnn.backbone.out_channels * 4)
        self.feature_scale = 1.0

    def scores(self, feats: numpy.ndarray) -> numpy.ndarray:
        """SVM scores ``(n, C)`` (column 0, background, is 0)."""
        s = numpy.full((len(feats), self.num_classes), -numpy.inf)
        s[:, 0] = 0.0
        for k, svm in enumerate(self.svms):
            if svm is not None:
                s[:, k] = svm.decision_function(feats)
        return s

    def detect(self, image: numpy.ndarray, proposals: numpy.ndarray,
               warp: Callable[[numpy.ndarray, numpy.ndarray, int], numpy.ndarray] = warp_regions,
               score_thresh: float = -1.0,
               nms_thresh: float = 0.3, max_detections: int = 100) -> dict[str, numpy.ndarray]:
        """Warp every proposal, CNN features, SVM scores, box regression, per-class NMS. Scores are SVM
        margins passed through a logistic (monotone: rankings and AP are the margins')."""
        H, W = image.shape[:2]
        props = numpy.asarray(proposals, dtype=numpy.float64).reshape(-1, 4)
        if len(props) == 0:
            return postprocess(numpy.zeros((0, self.num_classes, 4)), numpy.zeros((0, self.num_classes)), 0, 1, 0)
        feats = rcnn_features(self.cnn, warp(image, props, self.crop_size)) * self.feature_scale
        margins = self.scores(feats)
        deltas = self.regressor.predict(feats).reshape(len(props), -1)
        boxes = decode_boxes(deltas, props).reshape(len(props), self.num_classes, 4)
        boxes = clip_boxes_to_image(boxes, (H, W))
        probs = 1.0 / (1.0 + numpy.exp(-numpy.clip(margins, -50, 50)))
        probs[:, 0] = 0.0
        thr = 1.0 / (1.0 + numpy.exp(-score_thresh))
        return postprocess(boxes, probs, thr, nms_thresh, max_detections)
