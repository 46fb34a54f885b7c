"""``handgrad detect MODEL IMAGE... [--out DIR] [--score 0.5] [--json]``.

MODEL is the out dir of a ``handgrad run rcnn-scenes``, ``fast-rcnn-scenes``, ``faster-rcnn-scenes`` or
``mask-rcnn-scenes`` run (or its ``detector.json``). For each image: proposals (selective search, or the
RPN of Faster/Mask R-CNN), the detector, and ``DIR/<image name>.png`` with the boxes drawn (class and score,
those with score >= ``--score``) and, for a Mask R-CNN, the instance masks blended in colour (their RLE in
the JSON); all detections go to ``DIR/detections.json``
(``--json`` also prints them on stdout). A missing file, a file that is not an image or a checkpoint of
another kind ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy

from handgrad.errors import ExperimentError

KINDS = ("fast-rcnn", "rcnn", "faster-rcnn", "mask-rcnn")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``detect`` on the ``handgrad`` subcommand parser."""
    p = sub.add_parser("detect", help="detect objects (and masks) with a detector saved by a *rcnn-scenes run",
                       description=__doc__.split("\n\n")[1].replace("%", "%%"))
    p.add_argument("model", help="run folder of a (fast-/faster-/mask-)rcnn-scenes run, or its detector.json")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default=os.path.join("runs", "detect"), metavar="DIR",
                   help="output folder (default runs/detect)")
    p.add_argument("--score", type=float, default=0.5, help="draw detections with score >= this (default 0.5)")
    p.add_argument("--json", action="store_true", help="also print the detections as JSON on stdout")
    return p


def _meta(model: str) -> tuple[str, dict[str, Any]]:
    path = model if model.endswith(".json") else os.path.join(model, "detector.json")
    folder = os.path.dirname(path) or "."
    if not os.path.exists(model):
        raise ExperimentError(f"no such model: {model}")
    if not os.path.isfile(path):
        raise ExperimentError(f"{model} is not a detector: no detector.json (save one with handgrad run "
                              "rcnn-scenes or fast-rcnn-scenes)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExperimentError(f"{path} is not a readable detector description ({e})") from e
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS or not isinstance(meta.get("classes"), list):
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise ExperimentError(f"{path}: a checkpoint of kind {kind!r}, not a detector ({', '.join(KINDS)})")
    return folder, meta


def load_detector(model: str) -> tuple[Any, dict[str, Any]]:
    """``(detect(image) -> dict, meta)`` for a saved detector."""
    from handgrad.serialization import load
    from handgrad.vision.models import CropClassifier, FastRCNN
    from handgrad.vision.models.backbone import normalize_image
    from handgrad.vision.models.rcnn import RCNN, LinearSVM
    from handgrad.vision.proposals import selective_search

    folder, meta = _meta(model)
    classes = meta["classes"]
    weights = os.path.join(folder, "detector.safetensors")
    if not os.path.isfile(weights):
        raise ExperimentError(f"{folder}: detector.safetensors is missing")
    try:
        state = load(weights)
    except Exception as e:  # a corrupt file: one line, whatever the reader raised
        raise ExperimentError(f"{weights} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    n_prop, mode = int(meta.get("proposals", 2000)), str(meta.get("proposal_mode", "fast"))
    try:
        if meta["kind"] in ("faster-rcnn", "mask-rcnn"):
            from handgrad.vision.models.faster_rcnn import FasterRCNN
            from handgrad.vision.models.mask_rcnn import MaskRCNN

            if meta["kind"] == "mask-rcnn":  # runs saved before the mask head's shape was recorded had 2 x 64
                rpn_net = MaskRCNN(len(classes), mask_convs=int(meta.get("mask_convs", 2)),
                                   mask_channels=int(meta.get("mask_channels", 64)))
            else:
                rpn_net = FasterRCNN(len(classes))
            rpn_net.load_state_dict(state)

            def detect(img: numpy.ndarray) -> dict[str, numpy.ndarray]:
                return rpn_net.detect(img, normalize=normalize_image)
        elif meta["kind"] == "fast-rcnn":
            net = FastRCNN(len(classes), pooling=meta.get("pooling", "align"))
            net.load_state_dict(state)

            def detect(img: numpy.ndarray) -> dict[str, numpy.ndarray]:
                props = selective_search(img, mode)[:n_prop]
                return net.detect(img, props, normalize=normalize_image)
        else:
            cnn = CropClassifier(len(classes))
            cnn.load_state_dict(state)
            heads = numpy.load(os.path.join(folder, "rcnn_heads.npz"))
            rc = RCNN(cnn, len(classes), int(meta.get("crop", 48)))
            rc.feature_scale = float(heads["feature_scale"])
            rc.regressor.W = heads["reg_w"]
            for k in range(1, len(classes)):
                if numpy.isfinite(heads["svm_b"][k]):
                    s = LinearSVM()
                    s.w, s.b = heads["svm_w"][k], float(heads["svm_b"][k])
                    rc.svms[k] = s

            def detect(img: numpy.ndarray) -> dict[str, numpy.ndarray]:
                return rc.detect(img, selective_search(img, mode)[:n_prop])
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        raise ExperimentError(f"{folder}: the weights do not fit a {meta['kind']} detector ({e})") from e
    return detect, meta


def run(opts: argparse.Namespace) -> int:
    from PIL import Image

    from handgrad.data.coco import load_image
    from handgrad.data.scenes import draw_detections

    if not 0 <= opts.score <= 1:
        raise ExperimentError(f"--score must be in [0, 1], got {opts.score}")
    detect, meta = load_detector(opts.model)
    images = []
    for path in opts.images:
        try:
            images.append((path, load_image(path, "image file")))
        except (FileNotFoundError, ValueError) as e:
            raise ExperimentError(str(e)) from e
    os.makedirs(opts.out, exist_ok=True)
    results = []
    for path, img in images:
        t0 = time.perf_counter()
        d = detect(img)
        sec = time.perf_counter() - t0
        keep = d["scores"] >= opts.score
        masks = d["masks"][keep] if "masks" in d else None
        pic = draw_detections(img, d["boxes"][keep], d["labels"][keep], meta["classes"], d["scores"][keep], masks=masks)
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        Image.Image.save(pic, os.path.join(opts.out, name))
        dets = [{"box": [round(float(v), 2) for v in b], "label": meta["classes"][int(c)], "score": round(float(s), 4)}
                for b, c, s in zip(d["boxes"][keep], d["labels"][keep], d["scores"][keep])]
        if masks is not None:
            from handgrad.vision.mask import encode_rle

            for det, m in zip(dets, masks):
                det["mask_rle"] = encode_rle(m)
        results.append({"image": path, "seconds": round(sec, 4), "detections": dets})
        print(f"{path}: {int(keep.sum())} detections (score >= {opts.score}) in {sec:.2f}s -> "
              f"{os.path.join(opts.out, name)}", file=sys.stderr)
    with open(os.path.join(opts.out, "detections.json"), "w") as f:
        json.dump(results, f, indent=1)
    if opts.json:
        print(json.dumps(results, indent=1))
    return 0
