"""Detection metrics: VOC AP against hand-computed cases, COCO mAP against pycocotools (a test extra)."""

import copy
import json
import warnings

import numpy as np
import pytest

from handgrad.metrics.detection import (
    COCO_STAT_NAMES,
    coco_json_to_lists,
    eval_detection_coco,
    eval_detection_voc,
    plot_pr_curves,
    voc_ap,
)
from handgrad.vision.mask import encode_rle


def test_voc_ap_by_hand():
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    # area: recall 0..0.5 at precision 1, 0.5..1 at 2/3
    assert voc_ap(rec, prec) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11-point: t = 0..0.5 (6 points) -> 1, t = 0.6..1 (5 points) -> 2/3
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_eval_detection_voc_simple_cases():
    gts = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]), "labels": np.array([1, 2])},
           {"boxes": np.array([[0, 0, 10, 10.0]]), "labels": np.array([1]), "difficult": np.array([True])},
           {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]  # an image with no objects
    dets = [{"boxes": np.array([[0, 0, 10, 9.0], [1, 0, 10, 10], [20, 20, 30, 30]]), "labels": np.array([1, 1, 2]),
             "scores": np.array([0.9, 0.8, 0.7])},
            {"boxes": np.array([[0, 0, 10, 10.0]]), "labels": np.array([1]), "scores": np.array([0.95])},
            {"boxes": np.array([[5, 5, 9, 9.0]]), "labels": np.array([1]), "scores": np.array([0.85])}]
    r = eval_detection_voc(gts, dets, num_classes=3)
    # class 1: one positive (the difficult one is ignored); ranking 0.95 (difficult: ignored), 0.9 TP,
    # 0.85 FP (empty image), 0.8 FP (duplicate) -> AP 1; class 2: AP 1
    assert np.isnan(r["ap"][0]) and r["ap"][1] == pytest.approx(1.0) and r["ap"][2] == pytest.approx(1.0)
    dets[0]["scores"] = np.array([0.5, 0.8, 0.7])  # the better-placed box now ranks below its duplicate
    dets[2]["scores"] = np.array([0.9])  # and the false positive on the empty image ranks first
    r = eval_detection_voc(gts, dets, num_classes=3)
    # class 1 ranking: 0.95 ignored, 0.9 FP, 0.8 TP (IoU 0.9), 0.5 FP duplicate -> AP = 1/2
    assert r["ap"][1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="label 7"):
        eval_detection_voc(gts, [{"boxes": np.zeros((1, 4)), "labels": [7], "scores": [1.0]}, {}, {}], 3)
    bad = copy.deepcopy(gts)
    bad[0]["boxes"][0] = [10, 0, 0, 10]
    with pytest.raises(ValueError, match="x2 < x1"):
        eval_detection_voc(bad, dets, 3)


def _random_coco(seed, n_img=12, n_cat=4, H=64, W=80):
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for i in range(n_img):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": H, "width": W})
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, W - 10), rng.uniform(0, H - 10)
            w, h = rng.uniform(3, min(60, W - x)), rng.uniform(3, min(50, H - y))
            m = np.zeros((H, W), np.uint8)
            m[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = 1
            m[int(y):int(y + h / 3), int(x):int(x + w / 3)] = 0  # not a full rectangle
            crowd = int(rng.random() < 0.1)
            cat = int(rng.integers(1, n_cat + 1))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [x, y, w, h],
                         "area": float(m.sum()), "iscrowd": crowd, "segmentation": encode_rle(m)})
            for _ in range(rng.integers(0, 3)):  # detections near it, some with the wrong class
                j = rng.normal(0, 3, 4)
                bx, by = max(0.0, x + j[0]), max(0.0, y + j[1])
                bw, bh = max(1.0, w + j[2]), max(1.0, h + j[3])
                dm = np.zeros((H, W), np.uint8)
                dm[int(by):int(np.ceil(by + bh)), int(bx):int(np.ceil(bx + bw))] = 1
                dc = cat if rng.random() < 0.8 else int(rng.integers(1, n_cat + 1))
                results.append({"image_id": i + 1, "category_id": dc, "bbox": [bx, by, bw, bh],
                                "score": float(rng.random()), "segmentation": encode_rle(dm)})
        for _ in range(rng.integers(0, 3)):  # background false positives
            bx, by = rng.uniform(0, W - 5), rng.uniform(0, H - 5)
            dm = np.zeros((H, W), np.uint8)
            dm[int(by):int(by) + 4, int(bx):int(bx) + 4] = 1
            results.append({"image_id": i + 1, "category_id": int(rng.integers(1, n_cat + 1)),
                            "bbox": [bx, by, 4.0, 4.0], "score": float(rng.random()),
                            "segmentation": encode_rle(dm)})
    cats = [{"id": c, "name": str(c)} for c in range(1, n_cat + 2)]  # one category without any box
    return {"images": images, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_equals_pycocotools(iou_type, seed, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    doc, results = _random_coco(seed, n_img=12 if seed else 30)
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(p))
            dt = gt.loadRes(copy.deepcopy(results) if iou_type == "segm" else
                            [{k: v for k, v in r.items() if k != "segmentation"} for r in results])
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    gts, dets, cats = coco_json_to_lists(doc, results, with_masks=iou_type == "segm")
    ours = eval_detection_coco(gts, dets, iou_type, categories=cats)
    np.testing.assert_allclose(ours["stats"], ev.stats, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours["precision"], ev.eval["precision"], atol=1e-6, rtol=0)
    assert ours["AP"] == ours["stats"][0] and len(COCO_STAT_NAMES) == 12


def test_coco_perfect_and_empty():
    g = [{"boxes": np.array([[0, 0, 10, 10], [50, 50, 150, 150.0]]), "labels": np.array([1, 2])},
         {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    d = [{"boxes": g[0]["boxes"].copy(), "labels": np.array([1, 2]), "scores": np.array([0.9, 0.8])},
         {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)}]
    r = eval_detection_coco(g, d)
    assert r["AP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0) and r["APm"] == -1
    r = eval_detection_coco(g, [{}, {}])
    assert r["AP"] == 0.0
    with pytest.raises(ValueError, match="iou_type"):
        eval_detection_coco(g, d, "keypoints")
    with pytest.raises(ValueError, match="NaN"):
        eval_detection_coco([{"boxes": np.array([[0, 0, np.nan, 1]]), "labels": [1]}], [{}])


def test_pr_curve_png(tmp_path):
    gts = [{"boxes": np.array([[0, 0, 10, 10.0]]), "labels": np.array([1])}]
    dets = [{"boxes": np.array([[0, 0, 10, 10.0], [30, 30, 40, 40]]), "labels": np.array([1, 1]),
             "scores": np.array([0.4, 0.9])}]
    r = eval_detection_voc(gts, dets, 2)
    assert r["ap"][1] == pytest.approx(0.5)
    p = plot_pr_curves(r, tmp_path / "pr.png", ["bg", "thing"])
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
