"""Detection evaluation: Pascal VOC AP (2007 11-point and area) and COCO mAP@[.5:.95] for boxes and masks.

Inputs are per-image lists, the natural output of a detector (ChainerCV's ``eval_detection_voc`` layout):

* ground truth ``gts[i] = {"boxes": (G, 4) [x1, y1, x2, y2], "labels": (G,), optional "masks": (G, H, W)
  bool, "iscrowd": (G,), "area": (G,), "difficult": (G,)}``
* detections ``dets[i] = {"boxes": (D, 4), "labels": (D,), "scores": (D,), optional "masks": (D, H, W)}``

Boxes are in continuous coordinates (area ``(x2 - x1)(y2 - y1)``, no +1), as COCO and torchvision use them.

**VOC** (Everingham et al. 2010): per class, detections sorted by score are matched greedily to the
unmatched ground truth of highest IoU >= ``iou_thresh``; "difficult" boxes are neither true nor false
positives. AP is either the 2007 11-point interpolation ``mean_{t in 0, .1, .., 1} max_{r >= t} p(r)``
or the area under the interpolated (monotone) precision-recall curve (VOC 2010+).

**COCO** (``pycocotools.cocoeval.COCOeval``, re-implemented step for step so that the 12 summary numbers are
equal to pycocotools' to 1e-6): IoU thresholds .50:.05:.95, 101 recall points, max 1/10/100 detections per
image, area ranges all/small (< 32^2)/medium/large (> 96^2) on the ground truth's area; crowd boxes match
many detections with IoU = intersection / detection area; per image and class at most 100 detections by
score. ``stats`` = AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; -1 where undefined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from handgrad.vision.mask import decode_rle
from handgrad.vision.ops.boxes import box_iou

__all__ = ["voc_ap", "eval_detection_voc", "eval_detection_coco", "COCO_STAT_NAMES", "plot_pr_curves",
           "coco_json_to_lists"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _get(d: dict[str, Any], key: str, n: int, default: Any, dtype: Any) -> numpy.ndarray:
    v = d.get(key)
    if v is None:
        return numpy.full(n, default, dtype=dtype)
    return numpy.asarray(v, dtype=dtype).reshape(n)


def _boxes(d: dict[str, Any], i: int, what: str) -> numpy.ndarray:
    b = numpy.asarray(d.get("boxes", numpy.zeros((0, 4))), dtype=numpy.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"detection eval: {what}[{i}]['boxes'] must be (n, 4), got {b.shape}")
    if not numpy.isfinite(b).all():
        raise ValueError(f"detection eval: {what}[{i}]['boxes'] contains NaN or infinite values")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError(f"detection eval: {what}[{i}]['boxes'] has a box with x2 < x1 or y2 < y1")
    return b


# -- Pascal VOC ------------------------------------------------------------------------------------------------
def voc_ap(rec: numpy.ndarray, prec: numpy.ndarray, use_07_metric: bool = False) -> float:
    """AP from a precision-recall curve (recall increasing): 11-point (VOC 2007) or area (VOC 2010+)."""
    rec, prec = numpy.asarray(rec, dtype=numpy.float64), numpy.asarray(prec, dtype=numpy.float64)
    if use_07_metric:
        ap = 0.0
        for t in numpy.arange(0.0, 1.1, 0.1):
            p = prec[rec >= t]
            ap += (p.max() if p.size else 0.0) / 11
        return float(ap)
    mrec = numpy.concatenate([[0.0], rec, [1.0]])
    mpre = numpy.concatenate([[0.0], prec, [0.0]])
    mpre = numpy.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: max to the right
    i = numpy.flatnonzero(mrec[1:] != mrec[:-1])
    return float(numpy.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _voc_pr(gts: Sequence[dict[str, Any]], dets: Sequence[dict[str, Any]], iou_thresh: float,
            num_classes: int) -> tuple[list[Any], list[Any]]:
    scores: list[list[float]] = [[] for _ in range(num_classes)]
    matches: list[list[int]] = [[] for _ in range(num_classes)]
    n_pos = numpy.zeros(num_classes, dtype=numpy.int64)
    for i, (g, d) in enumerate(zip(gts, dets)):
        gb, db = _boxes(g, i, "gts"), _boxes(d, i, "dets")
        gl = _get(g, "labels", len(gb), 0, numpy.int64)
        dl = _get(d, "labels", len(db), 0, numpy.int64)
        ds = _get(d, "scores", len(db), 0.0, numpy.float64)
        diff = _get(g, "difficult", len(gb), False, bool)
        for k in numpy.unique(numpy.concatenate([gl, dl])):
            if not 0 <= k < num_classes:
                raise ValueError(f"eval_detection_voc: label {k} in image {i} outside 0..{num_classes - 1}")
            gk, dk = gb[gl == k], db[dl == k]
            dif = diff[gl == k]
            sk = ds[dl == k]
            order = numpy.argsort(-sk, kind="stable")
            dk, sk = dk[order], sk[order]
            n_pos[k] += int((~dif).sum())
            scores[k] += sk.tolist()
            if len(gk) == 0:
                matches[k] += [0] * len(dk)
                continue
            iou = box_iou(dk, gk)
            best = iou.argmax(1)
            best[iou.max(1) < iou_thresh] = -1
            used = numpy.zeros(len(gk), dtype=bool)
            for j in best:
                if j < 0:
                    matches[k].append(0)
                elif dif[j]:
                    matches[k].append(-1)  # difficult: ignored
                elif not used[j]:
                    matches[k].append(1)
                    used[j] = True
                else:
                    matches[k].append(0)
    precs, recs = [], []
    for k in range(num_classes):
        s, m = numpy.asarray(scores[k]), numpy.asarray(matches[k], dtype=numpy.int64)
        order = numpy.argsort(-s, kind="stable")
        m = m[order]
        tp, fp = numpy.cumsum(m == 1), numpy.cumsum(m == 0)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            precs.append(tp / (tp + fp) if len(m) else None)
            recs.append(tp / n_pos[k] if n_pos[k] > 0 else None)
    return precs, recs


def eval_detection_voc(gts: Sequence[dict[str, Any]], dets: Sequence[dict[str, Any]], num_classes: int,
                       iou_thresh: float = 0.5, use_07_metric: bool = False,
                       ignore_background: bool = True) -> dict[str, Any]:
    """Per-class VOC AP and their mean: ``{"ap": (num_classes,) (NaN for a class with no ground truth),
    "map": float, "precision": [...], "recall": [...]}``. With ``ignore_background`` class 0 is skipped."""
    if len(gts) != len(dets):
        raise ValueError(f"eval_detection_voc: {len(gts)} ground-truth images but {len(dets)} detection lists")
    precs, recs = _voc_pr(gts, dets, iou_thresh, num_classes)
    ap = numpy.full(num_classes, numpy.nan)
    for k in range(num_classes):
        if (ignore_background and k == 0) or recs[k] is None:
            continue
        ap[k] = 0.0 if precs[k] is None else voc_ap(recs[k], precs[k], use_07_metric)
    valid = ap[~numpy.isnan(ap)]
    return {"ap": ap, "map": float(valid.mean()) if valid.size else float("nan"), "precision": precs,
            "recall": recs}


# -- COCO ------------------------------------------------------------------------------------------------------
def _crowd_iou(inter: numpy.ndarray, area_d: numpy.ndarray, area_g: numpy.ndarray,
               crowd: numpy.ndarray) -> numpy.ndarray:
    union = area_d[:, None] + area_g[None, :] - inter
    union = numpy.where(crowd[None, :], area_d[:, None], union)  # crowd: intersection over detection area
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return numpy.where(union > 0, inter / numpy.where(union > 0, union, 1), 0.0)


def _ious(dt: dict[str, Any], gt: dict[str, Any], iou_type: str) -> numpy.ndarray:
    if iou_type == "bbox":
        d, g = dt["boxes"], gt["boxes"]
        lt = numpy.maximum(d[:, None, :2], g[None, :, :2])
        rb = numpy.minimum(d[:, None, 2:], g[None, :, 2:])
        wh = numpy.clip(rb - lt, 0, None)
        inter = wh[..., 0] * wh[..., 1]
        ad = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
        ag = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    else:
        fd = dt["masks"].reshape(len(dt["masks"]), -1).astype(numpy.float64)
        fg = gt["masks"].reshape(len(gt["masks"]), -1).astype(numpy.float64)
        inter = fd @ fg.T
        ad, ag = fd.sum(1), fg.sum(1)
    return _crowd_iou(inter, ad, ag, gt["iscrowd"])


def _masks(d: dict[str, Any], n: int, i: int, what: str) -> numpy.ndarray:
    m = d.get("masks")
    if m is None:
        raise ValueError(f"eval_detection_coco: iou_type='segm' needs {what}[{i}]['masks']")
    if isinstance(m, (list, tuple)) and m and isinstance(m[0], dict):
        m = numpy.stack([decode_rle(r) for r in m])
    m = numpy.asarray(m, dtype=bool)
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"eval_detection_coco: {what}[{i}]['masks'] must be ({n}, H, W), got {m.shape}")
    return m


def _evaluate_img(gt: dict[str, Any], dt: dict[str, Any], ious: numpy.ndarray, a_rng: tuple[float, float],
                  thrs: numpy.ndarray) -> dict[str, Any] | None:
    """``COCOeval.evaluateImg`` for one image, class and area range (dt already sorted and truncated)."""
    G, D = len(gt["area"]), len(dt["scores"])
    if G == 0 and D == 0:
        return None
    g_ignore = (gt["iscrowd"] | (gt["area"] < a_rng[0]) | (gt["area"] > a_rng[1])).astype(numpy.int64)
    gind = numpy.argsort(g_ignore, kind="mergesort")
    g_ig = g_ignore[gind]
    crowd = gt["iscrowd"][gind]
    iou = ious[:, gind] if ious.size else ious
    T = len(thrs)
    gtm = numpy.zeros((T, G), dtype=bool)
    dtm = numpy.zeros((T, D), dtype=bool)
    dt_ig = numpy.zeros((T, D), dtype=bool)
    if iou.size:
        for ti, t in enumerate(thrs):
            for di in range(D):
                best = min(t, 1 - 1e-10)
                m = -1
                for gi in range(G):
                    if gtm[ti, gi] and not crowd[gi]:
                        continue
                    if m > -1 and g_ig[m] == 0 and g_ig[gi] == 1:
                        break
                    if iou[di, gi] < best:
                        continue
                    best = iou[di, gi]
                    m = gi
                if m == -1:
                    continue
                dt_ig[ti, di] = g_ig[m]
                dtm[ti, di] = True
                gtm[ti, m] = True
    out_of_range = (dt["area"] < a_rng[0]) | (dt["area"] > a_rng[1])
    dt_ig = dt_ig | (~dtm & out_of_range[None, :])
    return {"scores": dt["scores"], "matched": dtm, "dt_ignore": dt_ig, "gt_ignore": g_ig}


def eval_detection_coco(gts: Sequence[dict[str, Any]], dets: Sequence[dict[str, Any]], iou_type: str = "bbox",
                        categories: Sequence[int] | None = None,
                        max_dets: Sequence[int] = (1, 10, 100)) -> dict[str, Any]:
    """COCO evaluation (``COCOeval`` re-implemented): ``{"stats": (12,), "AP": ..., ..., "precision":
    (T, R, K, A, M), "recall": (T, K, A, M), "categories": [...]}``. ``categories`` defaults to the sorted
    labels present in the ground truth (pycocotools uses every category of the ground-truth file)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"eval_detection_coco: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if len(gts) != len(dets):
        raise ValueError(f"eval_detection_coco: {len(gts)} ground-truth images but {len(dets)} detection lists")
    thrs = numpy.linspace(0.5, 0.95, int(numpy.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    rec_thrs = numpy.linspace(0.0, 1.00, int(numpy.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    a_rngs = [(0, 1e10), (0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e10)]
    max_dets = list(max_dets)
    gl_all = [_get(g, "labels", len(_boxes(g, i, "gts")), 0, numpy.int64) for i, g in enumerate(gts)]
    cats = sorted({int(v) for lab in gl_all for v in lab}) if categories is None else list(categories)
    cat_pos = {c: j for j, c in enumerate(cats)}
    K, A, M, T, R = len(cats), len(a_rngs), len(max_dets), len(thrs), len(rec_thrs)
    evals: list[list[list[dict[str, Any]]]] = [[[] for _ in range(A)] for _ in range(K)]
    for i, (g, d) in enumerate(zip(gts, dets)):
        gb, db = _boxes(g, i, "gts"), _boxes(d, i, "dets")
        gl = gl_all[i]
        dl = _get(d, "labels", len(db), 0, numpy.int64)
        ds = _get(d, "scores", len(db), 0.0, numpy.float64)
        if numpy.isnan(ds).any():
            raise ValueError(f"eval_detection_coco: dets[{i}]['scores'] contains NaN")
        crowd = _get(g, "iscrowd", len(gb), False, bool)
        gm = _masks(g, len(gb), i, "gts") if iou_type == "segm" else None
        dm = _masks(d, len(db), i, "dets") if iou_type == "segm" else None
        if "area" in g and g["area"] is not None:
            garea = _get(g, "area", len(gb), 0.0, numpy.float64)
        elif gm is not None or g.get("masks") is not None:
            garea = (gm if gm is not None else _masks(g, len(gb), i, "gts")).sum(axis=(1, 2))
            garea = garea.astype(numpy.float64)
        else:
            garea = (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1])
        # a detection's area (for the area ranges) is its box's, also for masks: pycocotools' loadRes does
        # so whenever results carry a bbox, as every detector's results do
        darea = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
        for c in set(gl.tolist()) | set(dl.tolist()):
            if c not in cat_pos:
                if c in set(gl.tolist()):
                    raise ValueError(f"eval_detection_coco: ground-truth label {c} in image {i} is not a category")
                continue  # detections of a category outside the evaluated set are ignored (as pycocotools)
            gsel, dsel = numpy.flatnonzero(gl == c), numpy.flatnonzero(dl == c)
            order = numpy.argsort(-ds[dsel], kind="mergesort")[:max_dets[-1]]
            dsel = dsel[order]
            gt_c = {"boxes": gb[gsel], "iscrowd": crowd[gsel], "area": garea[gsel],
                    "masks": gm[gsel] if gm is not None else None}
            dt_c = {"boxes": db[dsel], "scores": ds[dsel], "area": darea[dsel],
                    "masks": dm[dsel] if dm is not None else None}
            ious = _ious(dt_c, gt_c, iou_type) if len(gsel) and len(dsel) else numpy.zeros((0, 0))
            for a, rng in enumerate(a_rngs):
                e = _evaluate_img(gt_c, dt_c, ious, rng, thrs)
                if e is not None:
                    evals[cat_pos[c]][a].append(e)
    precision = -numpy.ones((T, R, K, A, M))
    recall = -numpy.ones((T, K, A, M))
    for k in range(K):
        for a in range(A):
            E = evals[k][a]
            if not E:
                continue
            g_ig = numpy.concatenate([e["gt_ignore"] for e in E])
            npig = int(numpy.count_nonzero(g_ig == 0))
            if npig == 0:
                continue
            for m, max_det in enumerate(max_dets):
                scores = numpy.concatenate([e["scores"][:max_det] for e in E])
                inds = numpy.argsort(-scores, kind="mergesort")
                dtm = numpy.concatenate([e["matched"][:, :max_det] for e in E], axis=1)[:, inds]
                dt_ig = numpy.concatenate([e["dt_ignore"][:, :max_det] for e in E], axis=1)[:, inds]
                tps = dtm & ~dt_ig
                fps = ~dtm & ~dt_ig
                tp_sum = numpy.cumsum(tps, axis=1).astype(numpy.float64)
                fp_sum = numpy.cumsum(fps, axis=1).astype(numpy.float64)
                for t in range(T):
                    tp, fp = tp_sum[t], fp_sum[t]
                    nd = len(tp)
                    rc = tp / npig
                    pr = tp / (fp + tp + numpy.spacing(1))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    pr = numpy.maximum.accumulate(pr[::-1])[::-1] if nd else pr
                    idx = numpy.searchsorted(rc, rec_thrs, side="left")
                    q = numpy.zeros(R)
                    ok = idx < nd
                    q[ok] = pr[idx[ok]]
                    # pycocotools stops filling at the first recall threshold past the curve (a caught
                    # IndexError), and every later threshold is past it too: the same zeros as here.
                    precision[t, :, k, a, m] = q
    stats = numpy.zeros(12)

    def summarize(ap: bool, iou: float | None, a: int, md: int) -> float:
        m = max_dets.index(md)
        if ap:
            s = precision[:, :, :, a, m] if iou is None else precision[numpy.flatnonzero(numpy.isclose(thrs, iou)),
                                                                       :, :, a, m]
        else:
            s = recall[:, :, a, m] if iou is None else recall[numpy.flatnonzero(numpy.isclose(thrs, iou)), :, a, m]
        s = s[s > -1]
        return float(s.mean()) if s.size else -1.0

    md = max_dets[-1]
    stats[:] = [summarize(True, None, 0, md), summarize(True, 0.5, 0, md), summarize(True, 0.75, 0, md),
                summarize(True, None, 1, md), summarize(True, None, 2, md), summarize(True, None, 3, md),
                summarize(False, None, 0, max_dets[0]), summarize(False, None, 0, max_dets[min(1, M - 1)]),
                summarize(False, None, 0, md), summarize(False, None, 1, md), summarize(False, None, 2, md),
                summarize(False, None, 3, md)]
    out: dict[str, Any] = {"stats": stats, "precision": precision, "recall": recall, "categories": cats,
                           "iou_thresholds": thrs, "recall_thresholds": rec_thrs}
    out.update(zip(COCO_STAT_NAMES, stats.tolist()))
    return out


def coco_json_to_lists(gt_doc: dict[str, Any], results: Sequence[dict[str, Any]] | None = None,
                       with_masks: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """Per-image ground truth and detections (in ``gt_doc['images']`` order, sorted by id) from a COCO
    ground-truth document and a COCO results list (``image_id, category_id, bbox [x, y, w, h], score`` and
    ``segmentation`` RLE for masks); also the category ids. For comparing with pycocotools."""
    img_ids = sorted(im["id"] for im in gt_doc["images"])
    pos = {iid: j for j, iid in enumerate(img_ids)}
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt_doc["images"]}

    def collect(anns: Sequence[dict[str, Any]], is_gt: bool) -> list[dict[str, Any]]:
        per: list[list[dict[str, Any]]] = [[] for _ in img_ids]
        for a in anns:
            per[pos[a["image_id"]]].append(a)
        out = []
        for iid, lst in zip(img_ids, per):
            xywh = numpy.asarray([a["bbox"] for a in lst], dtype=numpy.float64).reshape(-1, 4)
            d: dict[str, Any] = {"boxes": numpy.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                                 "labels": numpy.asarray([a["category_id"] for a in lst], dtype=numpy.int64)}
            if is_gt:
                d["iscrowd"] = numpy.asarray([a.get("iscrowd", 0) for a in lst], dtype=bool)
                d["area"] = numpy.asarray([a["area"] for a in lst], dtype=numpy.float64)
            else:
                d["scores"] = numpy.asarray([a["score"] for a in lst], dtype=numpy.float64)
            if with_masks:
                h, w = sizes[iid]
                d["masks"] = numpy.stack([decode_rle(a["segmentation"]) for a in lst]) if lst else \
                    numpy.zeros((0, h, w), dtype=bool)
            out.append(d)
        return out

    gts = collect(gt_doc["annotations"], True)
    dets = collect(results or [], False)
    return gts, dets, sorted(c["id"] for c in gt_doc["categories"])


def plot_pr_curves(result: dict[str, Any], path: str | Path, class_names: Sequence[str] | None = None,
                   title: str = "precision-recall") -> Path:
    """PNG of per-class precision-recall curves from :func:`eval_detection_voc`'s result (AP in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for k, (p, r) in enumerate(zip(result["precision"], result["recall"])):
        if p is None or r is None or numpy.isnan(result["ap"][k]):
            continue
        name = class_names[k] if class_names is not None else str(k)
        ax.plot(r, p, label=f"{name} (AP {result['ap'][k]:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}: mAP {result['map']:.3f}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
