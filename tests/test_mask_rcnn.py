"""Mask R-CNN: the whole five-term loss and every gradient on a fixed tiny batch equal to a PyTorch build of the
same network (float64, the same sampled anchors and RoIs, mask targets rebuilt with the torch roi_align
oracle); the mask head and its loss equal to PyTorch ops, gradcheck, mask targets, the loss on the
ground-truth class only, masks from a model without a mask head, overfitting."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from _architecture_helpers import copy_to_torch
from test_detection_rpn_faster_rcnn import C, TorchFasterRCNN, tiny_batch
from test_vision_roi import roi_align_ref

import handgrad as hg
from handgrad import Tensor, gradcheck
from handgrad.vision.anchors import AnchorGenerator
from handgrad.vision.models.backbone import SceneBackbone
from handgrad.vision.models.faster_rcnn import FasterRCNN
from handgrad.vision.models.mask_rcnn import MaskHead, MaskRCNN, mask_loss, mask_targets
from handgrad.vision.models.rpn import RegionProposalNetwork


def tiny_mask_model(seed=0):
    """test_detection_rpn_faster_rcnn's tiny Faster R-CNN plus a mask head (2 convs of 5 channels, 4x4 RoIAlign
    -> 8x8 masks); every weight of the heads far from its tiny init, so every term and gradient matters."""
    hg.manual_seed(seed)
    rpn = RegionProposalNetwork(8, AnchorGenerator((8, 16), (0.5, 1.0, 2.0), 8), mid_channels=6,
                                pre_nms_top_n=(60, 30), post_nms_top_n=(12, 6), num_sample=32, min_size=2.0)
    m = MaskRCNN(C, SceneBackbone((4, 8, 8)), rpn, output_size=3, hidden=16, rois_per_image=8, mask_pool=4,
                 mask_channels=5, mask_convs=2).double()
    rng = np.random.default_rng(seed)
    for name, p in m.named_parameters():
        if "rpn" in name or "cls_score" in name or "bbox_pred" in name or "mask_head" in name:
            p.array[...] = rng.normal(0, 0.3, p.shape)
    return m


def tiny_mask_batch():
    """tiny_batch's images and boxes with an elliptical instance mask inside each box."""
    x, targets = tiny_batch()
    yy, xx = np.mgrid[0:32, 0:40] + 0.5
    for t in targets:
        b = t["boxes"]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        rx, ry = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
        t["masks"] = (((xx - cx[:, None, None]) / rx[:, None, None]) ** 2
                      + ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2) <= 1.0
    return x, targets


class TorchMaskRCNN(TorchFasterRCNN):
    """TorchFasterRCNN plus the mask branch from PyTorch layers; the mask targets are rebuilt here from the
    ground-truth masks with the per-RoI torch roi_align oracle (not taken from handgrad's sample)."""

    def __init__(self):
        super().__init__()
        tn = torch.nn
        self.mask_head = tn.Module()
        self.mask_head.convs = tn.Sequential(tn.Conv2d(8, 5, 3, padding=1), tn.ReLU(), tn.Conv2d(5, 5, 3, padding=1),
                                             tn.ReLU())
        self.mask_head.deconv = tn.ConvTranspose2d(5, 5, 2, stride=2)
        self.mask_head.predictor = tn.Conv2d(5, C, 1)

    def losses(self, x, s, targets):
        out = super().losses(x, s)
        rl = s["roi_labels"]
        fg = np.flatnonzero(rl > 0)
        fg = fg[np.argsort(s["rois"][fg, 0], kind="stable")]  # foreground RoIs, image by image
        rois = torch.tensor(s["rois"][fg].astype(np.float64))
        y = []
        for k in fg:  # the matched ground-truth mask, resampled into the RoI (spatial scale 1), >= 0.5
            n, g = int(s["rois"][k, 0]), int(s["roi_match"][k])
            gm = torch.tensor(targets[n]["masks"][g][None, None].astype(np.float64))
            r = torch.tensor([[0.0, *s["rois"][k, 1:].astype(np.float64)]])
            y.append((roi_align_ref(gm, r, (8, 8), 1.0, 2, True)[0, 0] >= 0.5).double())
        y = torch.stack(y)
        h = self.mask_head.convs(roi_align_ref(self.last_features, rois, (4, 4), 1 / 8, 2, True))
        z = self.mask_head.predictor(torch.relu(self.mask_head.deconv(h)))
        z = z[torch.arange(len(fg)), torch.tensor(rl[fg])]
        out["mask"] = TF.binary_cross_entropy_with_logits(z, y)
        return out, y


def test_mask_rcnn_five_losses_and_gradients_equal_torch_float64():
    m = tiny_mask_model()
    x, targets = tiny_mask_batch()
    hx = hg.tensor(x, requires_grad=True)
    losses, s, _ = m.losses(hx, targets, np.random.default_rng(0))
    assert set(losses) == {"rpn_objectness", "rpn_box", "head_cls", "head_box", "mask"}
    assert (s["anchor_labels"] == 1).sum() >= 3 and (s["anchor_labels"] == 0).sum() >= 20
    nfg = int((s["roi_labels"] > 0).sum())
    assert 2 <= nfg < len(s["roi_labels"]) and len(s["mask_rois"]) == nfg
    assert len(np.unique(s["rois"][s["roi_labels"] > 0, 0])) == 2  # foreground RoIs in both images
    sum(losses.values()).backward()

    tm = TorchMaskRCNN().double().train()
    copy_to_torch(m, tm)
    tx = torch.tensor(x, requires_grad=True)
    tl, ty = tm.losses(tx, s, targets)
    sum(tl.values()).backward()
    # the same mask targets, built independently; neither all ones nor all zeros
    np.testing.assert_array_equal(s["mask_targets"], ty.numpy())
    assert 0.2 < s["mask_targets"].mean() < 0.95
    for k in tl:
        assert losses[k].item() > 1e-4, k
        np.testing.assert_allclose(losses[k].item(), tl[k].item(), rtol=1e-9, err_msg=k)
    np.testing.assert_allclose(hx.grad.numpy(), tx.grad.numpy(), rtol=1e-7, atol=1e-12)
    tp = dict(tm.named_parameters())
    assert set(tp) == {n for n, _ in m.named_parameters()}
    for name, p in m.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).max() > 0, name
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=name)


def test_mask_rcnn_whole_loss_gradcheck():
    m = tiny_mask_model(1)
    x, targets = tiny_mask_batch()
    hx = Tensor(x[:1].copy(), requires_grad=True)
    feats0 = m.backbone(hx)
    lg, dl, anchors = m.rpn(feats0, (32, 40))
    s = m.sample(lg, dl, anchors, (32, 40), targets[:1], np.random.default_rng(0))
    assert len(s["mask_rois"]) >= 1

    def f(x):
        feats = m.backbone(x)
        logits, deltas, _ = m.rpn(feats, (32, 40))
        return sum(m.losses_from(feats, logits, deltas, s).values())

    assert gradcheck(f, (hx,), eps=1e-6, atol=1e-7, rtol=1e-5, directions=4)


def _head(seed=0, c=3, classes=4, ch=5):
    hg.manual_seed(seed)
    h = MaskHead(c, classes, channels=ch, num_convs=2).double()
    rng = np.random.default_rng(seed)
    for p in h.parameters():
        p.array[...] = rng.normal(0, 0.4, p.shape)
    return h


def test_mask_branch_and_loss_equal_torch_float64():
    rng = np.random.default_rng(0)
    head = _head()
    feats = rng.normal(size=(2, 3, 6, 7))
    rois = np.array([[0, 3.0, 4.0, 30.0, 40.0], [1, 0.0, 0.0, 20.0, 16.0], [0, 10.0, 2.0, 50.0, 30.0]])
    labels = np.array([2, 1, 3])
    targets = (rng.uniform(size=(3, 8, 8)) > 0.5).astype(float)
    hf = hg.tensor(feats, requires_grad=True)
    from handgrad.vision.ops.roi_align import roi_align

    z = head(roi_align(hf, rois, 4, 1 / 8, sampling_ratio=2, aligned=True))
    loss = mask_loss(z, labels, targets)
    loss.backward()

    tw = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in head.named_parameters()}
    tf = torch.tensor(feats, requires_grad=True)
    x = roi_align_ref(tf, torch.tensor(rois), (4, 4), 1 / 8, 2, True)
    x = torch.relu(TF.conv2d(x, tw["convs.0.weight"], tw["convs.0.bias"], padding=1))
    x = torch.relu(TF.conv2d(x, tw["convs.2.weight"], tw["convs.2.bias"], padding=1))
    x = torch.relu(TF.conv_transpose2d(x, tw["deconv.weight"], tw["deconv.bias"], stride=2))
    tz = TF.conv2d(x, tw["predictor.weight"], tw["predictor.bias"])
    tl = TF.binary_cross_entropy_with_logits(tz[torch.arange(3), torch.tensor(labels)], torch.tensor(targets))
    tl.backward()
    np.testing.assert_allclose(z.numpy(), tz.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-10)
    np.testing.assert_allclose(hf.grad.numpy(), tf.grad.numpy(), rtol=1e-8, atol=1e-12)
    for n, p in head.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tw[n].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=n)


def test_mask_head_and_loss_gradcheck():
    head = _head(1, c=2, classes=3, ch=3)
    rng = np.random.default_rng(1)
    x = Tensor(rng.normal(size=(2, 2, 3, 3)), requires_grad=True)
    t = (rng.uniform(size=(2, 6, 6)) > 0.5).astype(float)
    assert gradcheck(lambda x: mask_loss(head(x), np.array([1, 2]), t), (x,))


def test_loss_uses_only_the_ground_truth_class():
    rng = np.random.default_rng(2)
    z = Tensor(rng.normal(size=(2, 4, 3, 3)), requires_grad=True)
    mask_loss(z, np.array([3, 1]), np.ones((2, 3, 3))).backward()
    g = np.abs(z.grad.numpy()).sum((2, 3))
    assert (g[0, [0, 1, 2]] == 0).all() and g[0, 3] > 0
    assert (g[1, [0, 2, 3]] == 0).all() and g[1, 1] > 0


def test_mask_targets():
    m = np.zeros((2, 32, 32), bool)
    m[0, 8:24, 8:24] = True  # a square
    m[1, 0:16, 0:32] = True  # the top half
    t = mask_targets(m, np.array([[8.0, 8, 24, 24], [8.0, 8, 24, 24], [0.0, 0, 32, 32]]), np.array([0, 1, 1]), 8)
    assert t[0].all()
    np.testing.assert_array_equal(t[1][:4], 1)
    np.testing.assert_array_equal(t[1][4:], 0)
    np.testing.assert_array_equal(t[2][:4], 1)
    np.testing.assert_array_equal(t[2][4:], 0)
    with pytest.raises(ValueError, match="mask_targets: match indices"):
        mask_targets(m, np.array([[0.0, 0, 4, 4]]), np.array([2]), 8)


def _tiny(cls=MaskRCNN, **kw):
    hg.manual_seed(0)
    rpn = RegionProposalNetwork(8, AnchorGenerator((8, 16), (0.5, 1.0, 2.0), 8), mid_channels=6, num_sample=32)
    return cls(4, SceneBackbone((4, 8, 8)), rpn, output_size=3, hidden=16, rois_per_image=8, **kw)


def test_masks_from_a_model_without_mask_head_and_missing_masks_are_clear_errors():
    img = np.zeros((32, 40, 3), np.uint8)
    with pytest.raises(ValueError, match=r"FasterRCNN.detect: masks=True needs a model with a mask head"):
        _tiny(FasterRCNN).detect(img, masks=True)
    m = _tiny(mask_pool=4, mask_channels=4)
    d = m.detect(img, score_thresh=0.0)
    assert d["masks"].shape == (len(d["boxes"]), 32, 40) and d["masks"].dtype == bool
    t = [{"boxes": np.array([[2.0, 2, 20, 20]]), "labels": np.array([1])}]
    with pytest.raises(ValueError, match=r"MaskRCNN: targets\[0\] has no 'masks'"):
        m.losses(Tensor(np.zeros((1, 3, 32, 40), np.float32)), t, np.random.default_rng(0))
    gm = m.masks_for_boxes(img, np.array([[2.0, 3, 20, 30], [0, 0, 40, 32]]), np.array([1, 3]))
    assert gm.shape == (2, 32, 40) and gm.dtype == bool and not gm[0, :, 21:].any()
    with pytest.raises(ValueError, match=r"MaskRCNN.paste_masks: labels must be 1 class ids in 0..3"):
        m.masks_for_boxes(img, np.array([[2.0, 3, 20, 30]]), np.array([4]))
    t[0]["masks"] = np.zeros((1, 16, 16), bool)
    with pytest.raises(ValueError, match=r"masks'\] must be \(G, H, W\) = \(1, 32, 40\)"):
        m.losses(Tensor(np.zeros((1, 3, 32, 40), np.float32)), t, np.random.default_rng(0))


def test_overfits_masks_of_a_handful_of_scenes(tmp_path):
    """Four 96 px scenes: 150 joint steps reach mask AP@0.5 (COCO segm, handgrad's RLE/mask IoU) >= 0.8; the
    mask AP of these predictions equals pycocotools' (a test extra)."""
    from threadpoolctl import threadpool_limits

    from handgrad.data.scenes import DetectionScenes, SceneConfig
    from handgrad.metrics.detection import eval_detection_coco
    from handgrad.optim import Adam
    from handgrad.vision.models.backbone import normalize_image

    hg.manual_seed(0)
    cfg = SceneConfig(image_size=(96, 96), min_objects=1, max_objects=3, min_size=16, max_size=48, max_distractors=0)
    ds = DetectionScenes("train", size=4, config=cfg)
    data = [ds[i] for i in range(4)]
    rpn = RegionProposalNetwork(64, AnchorGenerator((16, 24, 32, 48)))
    m = MaskRCNN(ds.num_classes, SceneBackbone((16, 32, 64)), rpn,
                 hidden=128, rois_per_image=32, mask_pool=7, mask_channels=32)
    opt = Adam(m.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"):
        for _ in range(150):
            idx = rng.permutation(4)[:2]
            x = Tensor(np.stack([normalize_image(data[i][0]) for i in idx]))
            losses, _, _ = m.losses(x, [data[i][1] for i in idx], rng)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        dets = [m.detect(img, normalize=normalize_image, score_thresh=0.3) for img, _ in data]
    gts = [{"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"], "area": t["masks"].sum((1, 2))}
           for _, t in data]
    res = eval_detection_coco(gts, dets, "segm", categories=list(range(1, ds.num_classes)))
    assert res["AP50"] >= 0.8, res["AP50"]
    _equal_to_pycocotools(gts, dets, ds.num_classes, res, tmp_path)


def _equal_to_pycocotools(gts, dets, num_classes, ours, tmp_path):
    """Mask AP of these predictions (RLE by handgrad's encode_rle) equals pycocotools' COCOeval('segm')."""
    pytest.importorskip("pycocotools")
    import contextlib
    import io
    import json
    import warnings

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from handgrad.vision.mask import encode_rle

    H, W = gts[0]["masks"].shape[1:]
    images, anns, results = [], [], []
    for i, (g, d) in enumerate(zip(gts, dets)):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": int(H), "width": int(W)})
        for b, lab, m in zip(g["boxes"], g["labels"], g["masks"]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab), "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float(m.sum()), "segmentation": encode_rle(m.astype(np.uint8))})
        for b, lab, sc, m in zip(d["boxes"], d["labels"], d["scores"], d["masks"]):
            results.append({"image_id": i + 1, "category_id": int(lab), "score": float(sc),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                            "segmentation": encode_rle(m.astype(np.uint8))})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(doc))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        gt = COCO(str(p))
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose(ours["stats"], ev.stats, atol=1e-6, rtol=0)
