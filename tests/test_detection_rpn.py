"""RPN pieces: anchors, anchor target assignment and proposal creation against brute-force loops on small
cases; the RPN head and loss against PyTorch ops (float64) and gradcheck; bad input."""

import math

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad import Tensor, gradcheck
from handgrad.vision.anchors import AnchorGenerator, anchor_base, grid_anchors
from handgrad.vision.models.rpn import RegionProposalNetwork, RPNHead, anchor_targets, create_proposals


# -- brute force -------------------------------------------------------------------------------------------
def _iou1(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _labels_loop(anchors, gt, pos=0.7, neg=0.3):
    """The paper's rule, anchor by anchor: -1 ignore, 0 negative, 1 positive (no sampling)."""
    M, G = len(anchors), len(gt)
    iou = [[_iou1(anchors[m], gt[g]) for g in range(G)] for m in range(M)]
    gt_best = [max(iou[m][g] for m in range(M)) for g in range(G)]
    labels, match = [], []
    for m in range(M):
        best = max(iou[m])
        g_arg = iou[m].index(best)
        lab = -1
        if best < neg:
            lab = 0
        if any(iou[m][g] == gt_best[g] and gt_best[g] > 0 for g in range(G)) or best >= pos:
            lab = 1
        labels.append(lab)
        match.append(g_arg)
    return np.array(labels), np.array(match)


def _encode1(g, a):
    aw, ah = a[2] - a[0], a[3] - a[1]
    gw, gh = g[2] - g[0], g[3] - g[1]
    return [((g[0] + gw / 2) - (a[0] + aw / 2)) / aw, ((g[1] + gh / 2) - (a[1] + ah / 2)) / ah,
            math.log(gw / aw), math.log(gh / ah)]


def _small_case(seed=0):
    rng = np.random.default_rng(seed)
    anchors = grid_anchors(anchor_base((8, 16), (0.5, 1, 2)), (4, 5), 8)  # 120 anchors on a 32x40 image
    xy = rng.uniform(0, 24, (3, 2))
    wh = rng.uniform(6, 20, (3, 2))
    gt = np.concatenate([xy, xy + wh], 1)
    return anchors, gt


def test_anchors_against_loop():
    sizes, ratios, stride = (16, 32), (0.5, 1.0, 2.0), 8
    got = AnchorGenerator(sizes, ratios, stride)((24, 40), (3, 5))
    ref = []
    for i in range(3):
        for j in range(5):
            for s in sizes:
                for r in ratios:
                    cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
                    w, h = s / math.sqrt(r), s * math.sqrt(r)
                    ref.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    b = anchor_base()
    np.testing.assert_allclose((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
                               np.repeat(np.array([16, 24, 32, 48, 64, 96.0]) ** 2, 3), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchor_labels_against_loop_without_sampling(seed):
    anchors, gt = _small_case(seed)
    labels, targets = anchor_targets(anchors, gt, np.random.default_rng(0), num_sample=10_000)
    ref, match = _labels_loop(anchors, gt)
    np.testing.assert_array_equal(labels, ref)
    assert (ref == 1).sum() >= 3  # every ground-truth box has its best anchor
    for m in range(len(anchors)):
        if ref[m] == 1:
            np.testing.assert_allclose(targets[m], _encode1(gt[match[m]], anchors[m]), rtol=1e-12, atol=1e-12)
        else:
            assert not targets[m].any()


def test_anchor_sampling_counts_and_subset():
    anchors = AnchorGenerator()((128, 128), (16, 16))
    gt = np.array([[10, 10, 60, 70], [40, 40, 100, 90], [5, 80, 30, 120], [70, 5, 120, 50]], float)
    full, _ = anchor_targets(anchors, gt, np.random.default_rng(0), num_sample=10 ** 9)
    n_pos_all = (full == 1).sum()
    for num, frac in [(256, 0.5), (32, 0.5), (64, 0.25)]:
        lab, tg = anchor_targets(anchors, gt, np.random.default_rng(1), num_sample=num, pos_fraction=frac)
        n_pos, n_neg = (lab == 1).sum(), (lab == 0).sum()
        assert n_pos == min(n_pos_all, int(num * frac))
        assert n_pos + n_neg == num
        # sampling only turns labels into "ignored", never flips them
        assert np.all((lab == -1) | (lab == full))
        assert not tg[lab != 1].any()
    # no ground truth: all sampled anchors negative
    lab, _ = anchor_targets(anchors, np.zeros((0, 4)), np.random.default_rng(0))
    assert (lab == 0).sum() == 256 and (lab == 1).sum() == 0


def _decode1(d, a):
    aw, ah = a[2] - a[0], a[3] - a[1]
    cx, cy = a[0] + aw / 2 + d[0] * aw, a[1] + ah / 2 + d[1] * ah
    w, h = aw * math.exp(min(d[2], math.log(1000 / 16))), ah * math.exp(min(d[3], math.log(1000 / 16)))
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _proposals_loop(deltas, scores, anchors, size, pre, post, thr, min_size):
    H, W = size
    cand = []
    for m in range(len(anchors)):
        x1, y1, x2, y2 = _decode1(deltas[m], anchors[m])
        b = [min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H)]
        if b[2] - b[0] >= min_size and b[3] - b[1] >= min_size:
            cand.append((scores[m], m, b))
    cand.sort(key=lambda c: (-c[0], c[1]))
    cand = cand[:pre]
    kept = []
    for s, _, b in cand:
        if all(_iou1(b, k) <= thr for _, k in kept):
            kept.append((s, b))
    kept = kept[:post]
    return np.array([b for _, b in kept]).reshape(-1, 4), np.array([s for s, _ in kept])


@pytest.mark.parametrize("pre,post,thr", [(10_000, 10_000, 0.7), (50, 20, 0.7), (80, 1000, 0.3)])
def test_proposals_against_loop(pre, post, thr):
    rng = np.random.default_rng(3)
    anchors = grid_anchors(anchor_base((8, 16), (0.5, 1, 2)), (4, 5), 8)
    deltas = rng.normal(0, 0.5, (len(anchors), 4))
    deltas[:3, 2] = 10.0  # huge widths: clipped by BBOX_XFORM_CLIP and the image
    scores = rng.normal(size=len(anchors))
    boxes, s = create_proposals(deltas, scores, anchors, (32, 40), pre, post, thr, min_size=4.0)
    rb, rs = _proposals_loop(deltas, scores, anchors, (32, 40), pre, post, thr, 4.0)
    np.testing.assert_allclose(boxes, rb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s, rs, rtol=0, atol=0)
    assert len(boxes) <= post and (np.diff(s) <= 0).all()


# -- head and loss vs PyTorch --------------------------------------------------------------------------------


def test_rpn_head_and_loss_match_torch_float64():
    rng = np.random.default_rng(0)
    head = RPNHead(5, 3, mid_channels=6).double()
    for p in head.parameters():  # larger weights than the 0.01 init, so the comparison is not all zeros
        p.array[...] = rng.normal(0, 0.3, p.shape)
    x = rng.normal(size=(2, 5, 4, 3))
    labels = rng.integers(-1, 2, (2, 4 * 3 * 3))
    targets = rng.normal(size=(2, 36, 4)) * (labels == 1)[..., None]
    hx = hg.tensor(x, requires_grad=True)
    lg, dl = head(hx)
    obj, box = RegionProposalNetwork.loss(lg, dl, labels, targets)
    (obj + box).backward()

    tw = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in head.named_parameters()}
    tx = torch.tensor(x, requires_grad=True)
    t = torch.relu(torch.nn.functional.conv2d(tx, tw["conv.weight"], tw["conv.bias"], padding=1))
    tl = torch.nn.functional.conv2d(t, tw["cls_logits.weight"], tw["cls_logits.bias"])
    td = torch.nn.functional.conv2d(t, tw["bbox_pred.weight"], tw["bbox_pred.bias"])
    n, a, h, w = tl.shape
    tl = tl.permute(0, 2, 3, 1).reshape(n, -1)
    td = td.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    lab = torch.tensor(labels)
    s = lab >= 0
    tobj = torch.nn.functional.binary_cross_entropy_with_logits(tl[s], (lab[s] == 1).double(), reduction="sum")
    tobj = tobj / s.sum()
    p = lab == 1
    tbox = torch.nn.functional.smooth_l1_loss(td[p], torch.tensor(targets)[p], beta=1 / 9, reduction="sum") / s.sum()
    (tobj + tbox).backward()
    np.testing.assert_allclose(lg.numpy(), tl.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(dl.numpy(), td.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose([obj.item(), box.item()], [tobj.item(), tbox.item()], rtol=1e-10)
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    for name, prm in head.named_parameters():
        np.testing.assert_allclose(prm.grad.numpy(), tw[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


def test_rpn_head_gradcheck():
    rng = np.random.default_rng(1)
    head = RPNHead(2, 2, mid_channels=3).double()
    for p in head.parameters():
        p.array[...] = rng.normal(0, 0.5, p.shape)
    x = Tensor(rng.normal(size=(1, 2, 3, 3)), requires_grad=True)
    labels = np.array([[1, 0, -1, 1, 0, 0, 1, -1, 0, 1, 0, 0, 1, 0, -1, 0, 1, 0]])
    targets = rng.normal(size=(1, 18, 4))

    def f(x):
        lg, dl = head(x)
        o, b = RegionProposalNetwork.loss(lg, dl, labels, targets)
        return o + b, lg, dl

    assert gradcheck(f, (x,))


# -- bad input -------------------------------------------------------------------------------------------------
def test_image_smaller_than_stride_is_a_clear_error():
    with pytest.raises(ValueError, match=r"AnchorGenerator: image of 6x40 px is smaller than the anchors' stride 8"):
        AnchorGenerator(stride=8)((6, 40), (1, 5))
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        AnchorGenerator(stride=0)
    with pytest.raises(ValueError, match="sizes and ratios must be non-empty and positive"):
        anchor_base((16, -1), (1.0,))


@pytest.mark.parametrize("box,msg", [([5, 5, 5, 9], "degenerate"), ([5, 5, 9, 3], "x2 < x1 or y2 < y1"),
                                     ([float("nan"), 0, 4, 4], "NaN")])
def test_degenerate_annotation_boxes_are_clear_errors(box, msg):
    anchors = grid_anchors(anchor_base((8,), (1.0,)), (2, 2), 8)
    with pytest.raises(ValueError, match=rf"anchor_targets: gt_boxes\[1\].*{msg}"):
        anchor_targets(anchors, np.array([[0, 0, 4, 4], box], float), np.random.default_rng(0))


def test_create_proposals_shape_error():
    anchors = grid_anchors(anchor_base((8,), (1.0,)), (2, 2), 8)
    with pytest.raises(ValueError, match="create_proposals: deltas"):
        create_proposals(np.zeros((3, 4)), np.zeros(4), anchors, (16, 16))
