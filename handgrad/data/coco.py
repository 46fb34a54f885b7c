"""A user's own COCO-format detection data: a folder of images plus an annotation JSON file.

``CocoDetection(root, ann_file)`` (torchvision's name and argument order) returns
``(image uint8 (H, W, 3), target)`` with ``target = {"boxes": float32 (n, 4) [x1, y1, x2, y2], "labels":
int64 (n,) in 1..K, "iscrowd": bool (n,), "area": float32 (n,), "image_id": int, "masks": bool (n, H, W)
(only with with_masks=True)}``. COCO's ``bbox`` is ``[x, y, w, h]`` in continuous coordinates, so
``x2 = x + w``. Category ids (any integers) map to contiguous labels 1..K in increasing id order
(``cat_ids[label - 1]`` gives the id back; ``classes[label]`` the name, ``classes[0]`` = background), the
layout of :class:`~handgrad.data.scenes.DetectionScenes`, so the same detectors train on either.

The whole file is checked when it is opened; bad input is a ``ValueError`` naming the file, the annotation
id and what is wrong (unparseable JSON, missing keys, negative width or height, NaN, a category not in
``categories``, an annotation of an unknown image). An image without annotations is valid (n = 0).
Segmentations may be RLE (compressed or not) or polygons (rasterised with Pillow).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy

from handgrad.data.dataset import Dataset
from handgrad.vision.mask import decode_rle

__all__ = ["CocoDetection", "load_image"]


def load_image(path: str | os.PathLike[str], who: str = "load_image") -> numpy.ndarray:
    """``uint8 (H, W, 3)`` RGB pixels of an image file; a clear error for a missing or non-image file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{who}: no such image file: {p}")
    try:
        with Image.open(p) as im:
            return numpy.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{who}: {p} is not a readable image ({e})") from e


def _poly_mask(polys: list[list[float]], h: int, w: int) -> numpy.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    for poly in polys:
        if len(poly) >= 6:
            d.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly) - 1, 2)], fill=1)
    return numpy.asarray(img, dtype=bool)


class CocoDetection(Dataset):
    """COCO-format detection data set. ``root``: the folder the ``file_name`` entries are relative to."""

    def __init__(self, root: str | os.PathLike[str], ann_file: str | os.PathLike[str], with_masks: bool = False,
                 transforms: Any = None) -> None:
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.with_masks = with_masks
        self.transforms = transforms
        who = f"CocoDetection({self.ann_file.name})"
        try:
            doc = json.loads(self.ann_file.read_text())
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{who}: no such annotation file: {self.ann_file}") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{who}: the annotation file is not valid JSON ({e})") from e
        if not isinstance(doc, dict):
            raise ValueError(f"{who}: expected a JSON object with 'images', 'annotations', 'categories'")
        for key in ("images", "annotations", "categories"):
            if not isinstance(doc.get(key), list):
                raise ValueError(f"{who}: missing or malformed '{key}' list")
        try:
            cats = sorted(doc["categories"], key=lambda c: int(c["id"]))
            self.cat_ids = [int(c["id"]) for c in cats]
            self.classes = ["__background__"] + [str(c.get("name", c["id"])) for c in cats]
            self.images = sorted(doc["images"], key=lambda im: int(im["id"]))
            ids = [int(im["id"]) for im in self.images]
            for im in self.images:
                im["file_name"], im["height"], im["width"]  # noqa: B018 - the keys must exist
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{who}: malformed category or image entry ({e!r})") from e
        if len(set(self.cat_ids)) != len(self.cat_ids):
            raise ValueError(f"{who}: duplicate category ids")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{who}: duplicate image ids")
        label_of = {c: k + 1 for k, c in enumerate(self.cat_ids)}
        pos = {iid: j for j, iid in enumerate(ids)}
        self._anns: list[list[dict[str, Any]]] = [[] for _ in ids]
        for a in doc["annotations"]:
            aid = a.get("id", "?") if isinstance(a, dict) else "?"
            try:
                iid, cid, bbox = int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{who}: annotation {aid} lacks a valid image_id, category_id or bbox ({e!r})") \
                    from e
            if iid not in pos:
                raise ValueError(f"{who}: annotation {aid} refers to unknown image id {iid}")
            if cid not in label_of:
                raise ValueError(f"{who}: annotation {aid} has category_id {cid}, not in the categories "
                                 f"{self.cat_ids}")
            if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
                raise ValueError(f"{who}: annotation {aid} has bbox {a['bbox']} (need 4 finite numbers)")
            if bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(f"{who}: annotation {aid} has bbox {bbox} with negative width or height "
                                 "(x2 < x1 or y2 < y1)")
            self._anns[pos[iid]].append({"label": label_of[cid], "bbox": bbox, "iscrowd": bool(a.get("iscrowd", 0)),
                                         "area": float(a.get("area", bbox[2] * bbox[3])),
                                         "segmentation": a.get("segmentation")})
        self._who = who

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int) -> dict[str, Any]:
        """The annotations of image ``i`` without reading its pixels."""
        im = self.images[i]
        anns = self._anns[i]
        n = len(anns)
        xywh = numpy.asarray([a["bbox"] for a in anns], dtype=numpy.float32).reshape(n, 4)
        t: dict[str, Any] = {
            "boxes": numpy.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            "labels": numpy.asarray([a["label"] for a in anns], dtype=numpy.int64),
            "iscrowd": numpy.asarray([a["iscrowd"] for a in anns], dtype=bool),
            "area": numpy.asarray([a["area"] for a in anns], dtype=numpy.float32),
            "image_id": int(im["id"]),
        }
        if self.with_masks:
            h, w = int(im["height"]), int(im["width"])
            masks = numpy.zeros((n, h, w), dtype=bool)
            for j, a in enumerate(anns):
                s = a["segmentation"]
                if isinstance(s, dict):
                    m = decode_rle(s)
                    if m.shape != (h, w):
                        raise ValueError(f"{self._who}: image {im['id']}: RLE size {m.shape} != image {(h, w)}")
                    masks[j] = m
                elif isinstance(s, list):
                    masks[j] = _poly_mask(s, h, w)
                else:
                    raise ValueError(f"{self._who}: image {im['id']}: annotation without a segmentation")
            t["masks"] = masks
        return t

    def __getitem__(self, i: int) -> tuple[numpy.ndarray, dict[str, Any]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self._who}: index {i} out of range for {len(self)} images")
        i %= len(self)
        im = self.images[i]
        img = load_image(self.root / im["file_name"], self._who)
        if img.shape[:2] != (int(im["height"]), int(im["width"])):
            raise ValueError(f"{self._who}: {im['file_name']} is {img.shape[1]}x{img.shape[0]}, the annotation "
                             f"says {im['width']}x{im['height']}")
        t = self.target(i)
        if self.transforms is not None:
            img, t = self.transforms(img, t)
        return img, t
