"""R-CNN's SVM, hard-negative mining and box regression; Fast R-CNN's RoI sampling, loss and detection."""

import numpy as np
import pytest
from scipy.optimize import minimize

from handgrad import Tensor
from handgrad.vision.models import FastRCNN
from handgrad.vision.models.rcnn import BoxRegressor, LinearSVM, train_svm_hard_negatives
from handgrad.vision.ops import box_iou, decode_boxes


def _primal(w, b, x, y, cost):
    return 0.5 * (w @ w + b * b) + np.sum(cost * np.maximum(0, 1 - y * (x @ w + b)))


def test_linear_svm_reaches_the_qp_optimum():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1, 1, (25, 3)), rng.normal(-1, 1, (30, 3))])
    y = np.concatenate([np.ones(25), -np.ones(30)])
    svm = LinearSVM(C=0.5, pos_weight=2.0, epochs=2000, tol=1e-10).fit(x, y)
    cost = np.where(y > 0, 1.0, 0.5)
    # the same problem as a QP in (w, b, slack), solved by SciPy
    n, d = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], 1)

    def f(z):
        return 0.5 * z[:d + 1] @ z[:d + 1] + cost @ z[d + 1:]

    cons = [{"type": "ineq", "fun": lambda z: y * (xb @ z[:d + 1]) - 1 + z[d + 1:]},
            {"type": "ineq", "fun": lambda z: z[d + 1:]}]
    ref = minimize(f, np.zeros(d + 1 + n), constraints=cons, method="SLSQP", options={"maxiter": 500})
    ours = _primal(svm.w, svm.b, x, y, cost)
    assert ours == pytest.approx(ref.fun, rel=1e-4)
    assert (np.sign(svm.decision_function(x)) == y).mean() > 0.85
    with pytest.raises(ValueError, match=r"labels \+-1"):
        LinearSVM().fit(x, np.zeros(55))


def test_hard_negative_mining_adds_violators():
    rng = np.random.default_rng(1)
    pos = rng.normal(2, 0.5, (20, 2))
    easy = rng.normal(-3, 0.5, (2000, 2))
    hard = rng.normal(0.8, 0.3, (40, 2))  # near the positives: mined in later rounds
    neg = np.concatenate([easy, hard])
    one = train_svm_hard_negatives(pos, neg, rounds=1, first=100, C=1.0)
    three = train_svm_hard_negatives(pos, neg, rounds=3, first=100, C=1.0)
    fp = lambda m: (m.decision_function(hard) > 0).mean()  # noqa: E731
    assert fp(three) < fp(one) or fp(one) == 0


def test_box_regressor_recovers_a_linear_map():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 5))
    W = rng.normal(size=(6, 4))
    t = np.concatenate([x, np.ones((200, 1))], 1) @ W
    reg = BoxRegressor(3, 5, lam=1e-6)
    reg.fit(2, x, t)
    np.testing.assert_allclose(reg.predict(x)[:, 2], t, atol=1e-6)
    np.testing.assert_array_equal(reg.predict(x)[:, 0], 0)


def test_fast_rcnn_roi_sampling_and_targets():
    rng = np.random.default_rng(3)
    gt = np.array([[10, 10, 60, 50], [100, 120, 180, 200.0]])
    labels = np.array([4, 7])
    xy = rng.uniform(0, 200, (500, 2))
    props = np.concatenate([xy, xy + rng.uniform(10, 80, (500, 2))], 1)
    rois, lab, tg = FastRCNN.sample_rois(props, gt, labels, rng, num=64)
    assert len(rois) == 64
    n_fg = (lab > 0).sum()
    assert 1 <= n_fg <= 16
    iou = box_iou(rois.astype(float), gt)
    assert (iou[lab > 0].max(1) >= 0.5).all() and (iou[lab == 0].max(1) < 0.5).all()
    assert set(lab[lab > 0]) <= {4, 7}
    # the targets decode back onto the matched ground-truth box
    fg = np.flatnonzero(lab > 0)
    back = decode_boxes(tg[fg].astype(float), rois[fg].astype(float), stds=(0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(back, gt[iou[fg].argmax(1)], atol=1e-3)
    assert np.all(tg[lab == 0] == 0)
    # an image with no objects: all background
    r2, l2, _ = FastRCNN.sample_rois(props, np.zeros((0, 4)), np.zeros(0, int), rng, num=16)
    assert len(r2) == 16 and (l2 == 0).all()


def test_fast_rcnn_loss_uses_the_true_class_offsets_only():
    m = FastRCNN(3)
    logits = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    deltas = Tensor(np.zeros((2, 12), np.float32), requires_grad=True)
    targets = np.array([[1.0, 0, 0, 0], [5.0, 5, 5, 5]], np.float32)
    cls, box = m.loss(logits, deltas, np.array([2, 0]), targets)
    assert cls.item() == pytest.approx(np.log(3), rel=1e-5)
    assert box.item() == pytest.approx(0.5 / 2)  # smooth L1 of the one offset 1.0 -> 0.5, over 2 RoIs
    box.backward()
    g = deltas.grad.numpy()
    assert g[0, 8] == pytest.approx(-0.5) and np.count_nonzero(g) == 1


def test_fast_rcnn_detect_shapes_and_empty():
    m = FastRCNN(4)
    img = np.zeros((64, 64, 3), np.uint8)
    d = m.detect(img, np.array([[0, 0, 20, 20], [10, 10, 60, 50.0]]), score_thresh=0.0)
    assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["labels"]) == len(d["scores"])
    assert (d["labels"] >= 1).all() and (d["boxes"] >= 0).all() and (d["boxes"] <= 64).all()
    e = m.detect(img, np.zeros((0, 4)))
    assert e["boxes"].shape == (0, 4)
