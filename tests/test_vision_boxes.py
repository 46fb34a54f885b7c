"""Box utilities and NMS against brute-force Python loops."""

import math

import numpy as np
import pytest

from handgrad import Tensor
from handgrad.vision.ops import (
    BoxCoder,
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    nms,
    remove_small_boxes,
)
from handgrad.vision.ops.nms import _nms_numpy


def random_boxes(rng, n, size=256.0, lo=2.0, hi=96.0):
    xy = rng.uniform(0, size - lo, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def iou_brute(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_brute(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou_brute(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def test_box_iou_matches_brute_force_and_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 17), random_boxes(rng, 11)
    a[3] = a[5]  # identical boxes: IoU 1
    b[0] = a[5]
    got = box_iou(a, b)
    want = np.array([[iou_brute(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(box_iou(b, a), want.T, rtol=1e-12)
    assert got[5, 0] == pytest.approx(1.0)
    assert box_iou(a, np.zeros((0, 4))).shape == (17, 0)


def test_box_iou_empty_boxes_and_tensors():
    a = np.array([[0, 0, 0, 0], [0, 0, 2, 2]], float)
    got = box_iou(a, a)
    assert np.isfinite(got).all() and got[0, 0] == 0 and got[1, 1] == 1
    t = box_iou(Tensor(a), Tensor(a))
    assert isinstance(t, Tensor) and np.array_equal(t.numpy(), got)
    with pytest.raises(ValueError, match=r"box_iou.*\(5, 3\)"):
        box_iou(np.zeros((5, 3)), a)


def test_box_area_convert_roundtrip():
    rng = np.random.default_rng(1)
    a = random_boxes(rng, 9)
    np.testing.assert_allclose(box_area(a), (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))
    for fmt in ("xywh", "cxcywh"):
        c = box_convert(a, "xyxy", fmt)
        np.testing.assert_allclose(box_convert(c, fmt, "xyxy"), a, rtol=1e-12)
    np.testing.assert_allclose(box_convert(a, "xyxy", "xywh")[:, 2:], a[:, 2:] - a[:, :2])
    np.testing.assert_allclose(box_convert(a, "xyxy", "cxcywh")[:, :2], (a[:, :2] + a[:, 2:]) / 2)
    np.testing.assert_allclose(box_convert(box_convert(a, "xyxy", "xywh"), "xywh", "cxcywh"),
                               box_convert(a, "xyxy", "cxcywh"))
    with pytest.raises(ValueError, match="unknown format"):
        box_convert(a, "xyxy", "yxyx")


def test_clip_and_remove_small():
    b = np.array([[-5, -3, 10, 300], [250, 10, 270, 20], [1, 1, 1.5, 9]], float)
    c = clip_boxes_to_image(b, (200, 256))  # (height, width)
    np.testing.assert_array_equal(c, [[0, 0, 10, 200], [250, 10, 256, 20], [1, 1, 1.5, 9]])
    assert remove_small_boxes(c, 1.0).tolist() == [0, 1]
    assert remove_small_boxes(c, 0.5).tolist() == [0, 1, 2]


def test_encode_decode_roundtrip_and_formula():
    rng = np.random.default_rng(2)
    p, g = random_boxes(rng, 50), random_boxes(rng, 50)
    t = encode_boxes(g, p)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    np.testing.assert_allclose(t[:, 0], ((g[:, 0] + g[:, 2]) / 2 - (p[:, 0] + p[:, 2]) / 2) / pw, rtol=1e-10)
    np.testing.assert_allclose(t[:, 3], np.log(gh / ph), rtol=1e-10)
    np.testing.assert_allclose(t[:, 2], np.log(gw / pw), rtol=1e-10)
    np.testing.assert_allclose(decode_boxes(t, p), g, rtol=1e-10, atol=1e-9)
    means, stds = (0.1, -0.2, 0.0, 0.3), (0.1, 0.1, 0.2, 0.2)
    tn = encode_boxes(g, p, means, stds)
    np.testing.assert_allclose(tn, (t - np.array(means)) / np.array(stds), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(decode_boxes(tn, p, means, stds), g, rtol=1e-10, atol=1e-9)
    coder = BoxCoder((10, 10, 5, 5))
    np.testing.assert_allclose(coder.encode(g, p), t * np.array([10, 10, 5, 5]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(coder.decode(coder.encode(g, p), p), g, rtol=1e-10, atol=1e-9)
    # one code per class: (N, 4k) decodes k boxes per row
    many = decode_boxes(np.concatenate([t, np.zeros_like(t)], 1), p)
    np.testing.assert_allclose(many[:, :4], g, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(many[:, 4:], p, rtol=1e-12)
    # a huge log-scale is clipped, not overflowed
    big = decode_boxes(np.array([[0, 0, 1e4, 1e4]]), p[:1])
    assert np.isfinite(big).all()
    assert big[0, 2] - big[0, 0] == pytest.approx(pw[0] * math.exp(math.log(1000 / 16)))
    with pytest.raises(ValueError, match="positive width"):
        encode_boxes(np.array([[0, 0, 0, 5.0]]), np.array([[0, 0, 4, 5.0]]))


def test_check_boxes_errors():
    check_boxes(np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"x2 < x1"):
        check_boxes(np.array([[0, 0, 5, 5], [6, 0, 2, 5.0]]), "loader")
    with pytest.raises(ValueError, match="NaN"):
        check_boxes(np.array([[0, np.nan, 5, 5]]))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        check_boxes(np.zeros((3, 5)))


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_brute_force(thr):
    rng = np.random.default_rng(3)
    b = random_boxes(rng, 300, size=128)
    s = rng.random(300)
    s[10] = s[20]  # a tie: the lower index wins
    want = nms_brute(b, s, thr)
    assert nms(b, s, thr).tolist() == want
    assert _nms_numpy(b, np.argsort(-s, kind="stable"), thr).tolist() == want
    t = nms(Tensor(b), Tensor(s), thr)
    assert isinstance(t, Tensor) and t.numpy().tolist() == want


def test_nms_clusters_and_edge_cases():
    # three clusters of near-duplicates: exactly the best of each survives
    base = np.array([[0, 0, 10, 10], [50, 50, 80, 90], [20, 60, 40, 70]], float)
    rng = np.random.default_rng(4)
    boxes = np.concatenate([base + rng.uniform(-0.5, 0.5, (3, 4)) for _ in range(5)])
    scores = rng.random(15)
    keep = nms(boxes, scores, 0.5)
    assert len(keep) == 3
    for c in range(3):
        members = np.arange(c, 15, 3)
        assert members[np.argmax(scores[members])] in keep
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert nms(boxes[:1], scores[:1], 0.5).tolist() == [0]
    with pytest.raises(ValueError, match=r"nms: scores must have shape \(N,\) = \(15,\), got \(3,\)"):
        nms(boxes, scores[:3], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nms(np.full((2, 4), np.nan), np.ones(2), 0.5)


def test_batched_nms_is_per_class():
    rng = np.random.default_rng(5)
    b = random_boxes(rng, 200, size=100)
    s = rng.random(200)
    c = rng.integers(0, 4, 200)
    got = batched_nms(b, s, c, 0.5)
    want = []
    for k in range(4):
        idx = np.flatnonzero(c == k)
        want += [idx[i] for i in nms_brute(b[idx], s[idx], 0.5)]
    want = sorted(want, key=lambda i: (-s[i], i))
    assert got.tolist() == want
    # identical boxes of two classes both survive
    two = batched_nms(np.array([[0, 0, 5, 5], [0, 0, 5, 5.0]]), np.array([0.9, 0.8]), np.array([0, 1]), 0.5)
    assert two.tolist() == [0, 1]
