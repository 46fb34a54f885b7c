"""A user's own Pascal VOC-format detection data: ``root/JPEGImages``, ``root/Annotations/*.xml`` and
optionally ``root/ImageSets/Main/{image_set}.txt`` (the VOCdevkit layout of one year, e.g. ``VOC2007``).

``VOCDetection(root, image_set, classes)`` returns ``(image uint8 (H, W, 3), target)`` with ``target =
{"boxes": float32 (n, 4) [x1, y1, x2, y2], "labels": int64 (n,) in 1..K, "difficult": bool (n,),
"image_id": str}``. VOC's corners are 1-based inclusive pixel indices, so the continuous box is
``[xmin - 1, ymin - 1, xmax, ymax]`` (the convention of the rest of handgrad). ``classes`` defaults to the
20 VOC classes; an object of another class is an error unless ``skip_unknown=True``. Every XML file is
parsed when the data set is opened, so a corrupt file, a box with ``xmax < xmin`` or a non-numeric corner
is reported at once, naming the file.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from handgrad.data.coco import load_image
from handgrad.data.dataset import Dataset

__all__ = ["VOCDetection", "VOC_CLASSES"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


class VOCDetection(Dataset):
    """Pascal VOC-format detection data set (all ``Annotations/*.xml`` if there is no image-set file)."""

    def __init__(self, root: str | os.PathLike[str], image_set: str = "trainval",
                 classes: Sequence[str] = VOC_CLASSES, skip_unknown: bool = False, transforms: Any = None) -> None:
        self.root = Path(root)
        self.classes = ["__background__"] + list(classes)
        self.transforms = transforms
        label_of = {c: k + 1 for k, c in enumerate(classes)}
        ann_dir = self.root / "Annotations"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"VOCDetection: no Annotations folder in {self.root}")
        ids_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        if ids_file.is_file():
            self.ids = [ln.split()[0] for ln in ids_file.read_text().splitlines() if ln.strip()]
        else:
            self.ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
        self._files: list[str] = []
        self._targets: list[dict[str, Any]] = []
        for iid in self.ids:
            path = ann_dir / f"{iid}.xml"
            who = f"VOCDetection({path.name})"
            try:
                tree = ET.parse(path).getroot()
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{who}: annotation file missing: {path}") from e
            except ET.ParseError as e:
                raise ValueError(f"{who}: corrupt XML ({e})") from e
            fname = tree.findtext("filename") or f"{iid}.jpg"
            boxes, labels, difficult = [], [], []
            for k, obj in enumerate(tree.iter("object")):
                name = (obj.findtext("name") or "").strip()
                if name not in label_of:
                    if skip_unknown:
                        continue
                    raise ValueError(f"{who}: object {k} has class {name!r}, not in the label set {list(classes)}")
                bb = obj.find("bndbox")
                try:
                    xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                except (AttributeError, TypeError, ValueError) as e:
                    raise ValueError(f"{who}: object {k} ({name}) has a missing or non-numeric bndbox corner") from e
                if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
                    raise ValueError(f"{who}: object {k} ({name}) has a NaN or infinite corner")
                if xmax < xmin or ymax < ymin:
                    raise ValueError(f"{who}: object {k} ({name}) has xmax < xmin or ymax < ymin: "
                                     f"({xmin}, {ymin}, {xmax}, {ymax})")
                boxes.append([xmin - 1, ymin - 1, xmax, ymax])
                labels.append(label_of[name])
                difficult.append((obj.findtext("difficult") or "0").strip() == "1")
            n = len(labels)
            self._files.append(fname)
            self._targets.append({"boxes": numpy.asarray(boxes, dtype=numpy.float32).reshape(n, 4),
                                  "labels": numpy.asarray(labels, dtype=numpy.int64),
                                  "difficult": numpy.asarray(difficult, dtype=bool), "image_id": iid})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, i: int) -> dict[str, Any]:
        t = self._targets[i]
        return {k: (v.copy() if isinstance(v, numpy.ndarray) else v) for k, v in t.items()}

    def __getitem__(self, i: int) -> tuple[numpy.ndarray, dict[str, Any]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"VOCDetection: index {i} out of range for {len(self)} images")
        i %= len(self)
        img = load_image(self.root / "JPEGImages" / self._files[i], "VOCDetection")
        t = self.target(i)
        if self.transforms is not None:
            img, t = self.transforms(img, t)
        return img, t
