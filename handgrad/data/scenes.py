"""Generated detection scenes with exact boxes and instance masks (nothing downloaded, nothing hand-labelled).

Each scene (default 256x256) is a crop of a real photograph (:class:`~handgrad.data.sprites.BackgroundBank`)
with 2 to 8 labelled objects (:class:`~handgrad.data.sprites.SpriteBank`: 12 classes of emoji and
Fashion-MNIST items) of 16 to 96 px (longer side), random scale and aspect ratio, plus up to 2 distractors
(classes outside the label set). Objects are pasted in z-order, later ones on top, so earlier ones may be
partly hidden; a new object is placed so that every object under it keeps at least ``min_visible`` of its
pixels (rejection sampling), and about half the objects are placed next to an earlier one so that about a
third of the objects are partly hidden (``scene_statistics`` measures it). Annotations are exact: the
instance mask is the visible part of the pasted pixels, the box the tight box of that mask
(``[x1, y1, x2, y2]``, continuous coordinates: ``x2 = last column + 1``); fully hidden objects are dropped.

Scenes are deterministic: scene ``i`` of split ``s`` with seed ``seed`` is drawn from
``numpy.random.default_rng([seed, split_id, i])``, so any scene can be regenerated alone, in any order,
on any machine. The splits are fixed: train / val / test use disjoint Fashion-MNIST items and disjoint
background photographs.

    ds = DetectionScenes("train", size=2000)        # a Dataset: ds[i] -> (image uint8 (H, W, 3), target)
    image, target = ds[0]                            # target: boxes (n, 4) float32, labels (n,) int64 in
                                                     # 1..12 (0 = background), masks (n, H, W) bool, ...
    export_coco(ds, "out/train")                     # PNG images + COCO JSON with RLE masks
    contact_sheet(ds, "sheet.png")                   # boxes and masks drawn on the first scenes
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy

from handgrad.data.dataset import Dataset
from handgrad.data.sprites import BackgroundBank, SpriteBank
from handgrad.vision.mask import encode_rle, mask_to_box

__all__ = ["SceneConfig", "DetectionScenes", "generate_scene", "export_coco", "contact_sheet", "scene_statistics",
           "SPLIT_SIZES"]

SPLIT_SIZES = {"train": 2000, "val": 300, "test": 500}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Sizes are the longer side of an object in pixels; ``aspect`` is the range of
    width / height multipliers applied to the sprite's own aspect."""

    image_size: tuple[int, int] = (256, 256)
    min_objects: int = 2
    max_objects: int = 8
    min_size: int = 16
    max_size: int = 96
    aspect: tuple[float, float] = (0.75, 1.33)
    max_distractors: int = 2
    near_prob: float = 0.5  # chance that an object is placed next to an earlier one (more occlusion)
    min_visible: float = 0.3  # every object keeps at least this fraction of its pixels visible
    tries: int = 20


def _place(rng: numpy.random.Generator, h: int, w: int, H: int, W: int, boxes: list[numpy.ndarray],
           near_prob: float) -> tuple[int, int]:
    if boxes and rng.random() < near_prob:
        b = boxes[int(rng.integers(len(boxes)))]
        cx = (b[0] + b[2]) / 2 + rng.uniform(-0.6, 0.6) * (b[2] - b[0] + w) / 2
        cy = (b[1] + b[3]) / 2 + rng.uniform(-0.6, 0.6) * (b[3] - b[1] + h) / 2
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        return min(max(x0, 0), W - w), min(max(y0, 0), H - h)
    return int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))


def generate_scene(rng: numpy.random.Generator, sprites: SpriteBank, backgrounds: BackgroundBank,
                   config: SceneConfig = SceneConfig()) -> dict[str, Any]:
    """One scene: ``{"image": uint8 (H, W, 3), "boxes": float32 (n, 4), "labels": int64 (n,) in 1..K,
    "masks": bool (n, H, W), "occluded": bool (n,) (partly hidden), "visible": float32 (n,) (visible
    fraction of the pasted pixels)}``; ``n = 0`` only if every object ended up fully hidden."""
    H, W = config.image_size
    if not 1 <= config.min_size <= config.max_size <= min(H, W):
        raise ValueError(f"generate_scene: need 1 <= min_size <= max_size <= image side, got {config}")
    image = backgrounds.sample(rng, (H, W)).copy()
    n_obj = int(rng.integers(config.min_objects, config.max_objects + 1))
    n_dis = int(rng.integers(0, config.max_distractors + 1))
    kinds = [1] * n_obj + [0] * n_dis
    rng.shuffle(kinds)  # distractors anywhere in the z-order: they occlude and get occluded
    owner = numpy.full((H, W), -1, dtype=numpy.int32)  # which pasted object shows at each pixel
    full_areas: list[int] = []
    labels: list[int] = []  # 0 for a distractor (dropped from the annotations)
    boxes: list[numpy.ndarray] = []
    for kind in kinds:
        side = float(numpy.exp(rng.uniform(numpy.log(config.min_size), numpy.log(config.max_size))))
        k = int(rng.integers(len(sprites.classes))) if kind else -1
        a = float(numpy.exp(rng.uniform(numpy.log(config.aspect[0]), numpy.log(config.aspect[1]))))
        h, w = (side, side * a) if a < 1 else (side / a, side)
        h, w = max(4, int(round(h))), max(4, int(round(w)))
        s = sprites.sample(rng, k, h, w) if kind else sprites.sample_distractor(rng, h, w)
        if not s.mask.any():
            continue
        placed = None
        for _ in range(config.tries):
            x0, y0 = _place(rng, h, w, H, W, boxes, config.near_prob)
            under = owner[y0:y0 + h, x0:x0 + w][s.mask]
            if full_areas:
                # the objects this one would cover: each must keep min_visible of its full area
                covered = numpy.bincount(under[under >= 0], minlength=len(full_areas))
                visible = numpy.bincount(owner[owner >= 0], minlength=len(full_areas))
                if numpy.any((visible - covered) < config.min_visible * numpy.asarray(full_areas)):
                    continue
            placed = (x0, y0)
            break
        if placed is None:
            continue
        x0, y0 = placed
        idx = len(full_areas)
        region = image[y0:y0 + h, x0:x0 + w]
        region[s.mask] = s.rgb[s.mask]
        owner[y0:y0 + h, x0:x0 + w][s.mask] = idx
        full_areas.append(int(s.mask.sum()))
        labels.append(k + 1 if kind else 0)
        boxes.append(numpy.array([x0, y0, x0 + w, y0 + h], dtype=numpy.float64))
    out_boxes, out_labels, out_masks, occluded, visible = [], [], [], [], []
    for idx, lab in enumerate(labels):
        if lab == 0:
            continue
        m = owner == idx
        n_vis = int(m.sum())
        if n_vis == 0:  # fully hidden: not annotated
            continue
        out_boxes.append(mask_to_box(m))
        out_labels.append(lab)
        out_masks.append(m)
        occluded.append(n_vis < full_areas[idx])
        visible.append(n_vis / full_areas[idx])
    n = len(out_labels)
    return {
        "image": image,
        "boxes": numpy.asarray(out_boxes, dtype=numpy.float32).reshape(n, 4),
        "labels": numpy.asarray(out_labels, dtype=numpy.int64),
        "masks": numpy.asarray(out_masks, dtype=bool).reshape(n, H, W),
        "occluded": numpy.asarray(occluded, dtype=bool),
        "visible": numpy.asarray(visible, dtype=numpy.float32),
    }


class DetectionScenes(Dataset):
    """The generated scenes of one split as a ``Dataset``: ``ds[i] -> (image uint8 (H, W, 3), target)``.

    ``target`` has torchvision's detection keys: ``boxes`` float32 (n, 4) ``[x1, y1, x2, y2]``, ``labels``
    int64 (n,) in ``1..K`` (0 is background), ``masks`` bool (n, H, W), plus ``occluded``, ``visible``,
    ``image_id`` (= i). ``size`` defaults to ``SPLIT_SIZES[split]`` (2,000 / 300 / 500). Scenes are made on
    demand and the last ``cache`` of them kept (pass ``cache=size`` to keep all; 256x256 scenes take about
    0.2 MB each with masks).
    """

    def __init__(self, split: str = "train", size: int | None = None, seed: int = 0,
                 config: SceneConfig = SceneConfig(), cache: int = 0) -> None:
        if split not in _SPLIT_ID:
            raise ValueError(f"DetectionScenes: split must be one of {tuple(_SPLIT_ID)}, got {split!r}")
        self.split, self.seed, self.config = split, int(seed), config
        self.size = SPLIT_SIZES[split] if size is None else int(size)
        if self.size < 0:
            raise ValueError(f"DetectionScenes: size must be >= 0, got {size}")
        self.sprites = SpriteBank(split)
        self.backgrounds = BackgroundBank(split)
        self.classes = ["__background__"] + self.sprites.class_names
        self._cache: dict[int, tuple[numpy.ndarray, dict[str, Any]]] = {}
        self._cache_size = int(cache)

    @property
    def num_classes(self) -> int:
        """Label classes plus background (``labels`` take values 1..num_classes-1)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[numpy.ndarray, dict[str, Any]]:
        i = int(i)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"DetectionScenes: index {i} out of range for {self.size} scenes")
        if i in self._cache:
            return self._cache[i]
        rng = numpy.random.default_rng([self.seed, _SPLIT_ID[self.split], i])
        s = generate_scene(rng, self.sprites, self.backgrounds, self.config)
        target = {k: s[k] for k in ("boxes", "labels", "masks", "occluded", "visible")}
        target["image_id"] = i
        item = (s["image"], target)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = item
        return item


def scene_statistics(ds: DetectionScenes, n: int | None = None) -> dict[str, float]:
    """Objects per scene, fraction partly hidden, size range and class counts over the first ``n`` scenes."""
    n = len(ds) if n is None else min(n, len(ds))
    counts, occl, sides, per_class = [], 0, [], numpy.zeros(ds.num_classes, dtype=numpy.int64)
    for i in range(n):
        _, t = ds[i]
        counts.append(len(t["labels"]))
        occl += int(t["occluded"].sum())
        b = t["boxes"]
        sides += numpy.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).tolist()
        numpy.add.at(per_class, t["labels"], 1)
    total = max(1, sum(counts))
    return {"scenes": n, "objects": int(sum(counts)), "objects_per_scene": sum(counts) / max(1, n),
            "min_objects": int(min(counts, default=0)), "max_objects": int(max(counts, default=0)),
            "partly_hidden": occl / total, "min_side": float(min(sides, default=0)),
            "max_side": float(max(sides, default=0)), "min_per_class": int(per_class[1:].min())}


def export_coco(ds: DetectionScenes, out_dir: str | os.PathLike[str], n: int | None = None,
                json_name: str = "annotations.json") -> Path:
    """Write scenes ``0..n-1`` as ``out_dir/images/{i:06d}.png`` and a COCO-format ``out_dir/json_name``
    (boxes ``[x, y, w, h]``, masks as compressed RLE, category ids 1..K) that any COCO tool reads.
    Returns the JSON path."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = len(ds) if n is None else min(n, len(ds))
    images, anns = [], []
    for i in range(n):
        img, t = ds[i]
        name = f"images/{i:06d}.png"
        Image.fromarray(img).save(out / name)
        images.append({"id": i, "file_name": name, "height": int(img.shape[0]), "width": int(img.shape[1])})
        for b, lab, m in zip(t["boxes"], t["labels"], t["masks"]):
            rle = encode_rle(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float(m.sum()), "segmentation": rle, "iscrowd": 0})
    cats = [{"id": k, "name": name, "supercategory": "object"} for k, name in enumerate(ds.classes) if k > 0]
    doc = {"info": {"description": f"handgrad generated detection scenes, split {ds.split}, seed {ds.seed}",
                    "config": asdict(ds.config)},
           "images": images, "annotations": anns, "categories": cats}
    path = out / json_name
    path.write_text(json.dumps(doc))
    return path


def _palette(k: int) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: numpy.ndarray, boxes: numpy.ndarray, labels: numpy.ndarray, class_names: list[str],
                    scores: numpy.ndarray | None = None, masks: numpy.ndarray | None = None) -> Any:
    """A PIL image with boxes (class, score) and, if given, masks blended in colour."""
    from PIL import Image, ImageDraw

    img = numpy.asarray(image, dtype=numpy.float32).copy()
    if masks is not None:
        for m, lab in zip(masks, labels):
            img[m] = 0.5 * img[m] + 0.5 * numpy.array(_palette(int(lab)))
    pil = Image.fromarray(img.astype(numpy.uint8))
    d = ImageDraw.Draw(pil)
    for j, (b, lab) in enumerate(zip(boxes, labels)):
        c = _palette(int(lab))
        x1, y1 = float(b[0]), float(b[1])
        d.rectangle([x1, y1, max(x1, float(b[2]) - 1), max(y1, float(b[3]) - 1)], outline=c, width=2)
        name = class_names[int(lab)] if 0 <= int(lab) < len(class_names) else str(int(lab))
        text = name if scores is None else f"{name} {float(scores[j]):.2f}"
        d.rectangle([float(b[0]), float(b[1]) - 11, float(b[0]) + 6 * len(text) + 2, float(b[1])], fill=c)
        d.text((float(b[0]) + 1, float(b[1]) - 11), text, fill=(0, 0, 0))
    return pil


def contact_sheet(ds: DetectionScenes, path: str | os.PathLike[str], n: int = 16, cols: int = 4) -> Path:
    """A PNG grid of the first ``n`` scenes with their masks (colour by class) and boxes drawn."""
    from PIL import Image

    n = min(n, len(ds))
    tiles = []
    for i in range(n):
        img, t = ds[i]
        tiles.append(draw_detections(img, t["boxes"], t["labels"], ds.classes, masks=t["masks"]))
    H, W = ds.config.image_size
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (W + 4), max(1, rows) * (H + 4)), (255, 255, 255))
    for j, tile in enumerate(tiles):
        sheet.paste(tile, ((j % cols) * (W + 4), (j // cols) * (H + 4)))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m handgrad.data.scenes OUT [--split test] [--n 500] [--seed 0]``: export a split as COCO
    (images + ``annotations.json``) and write ``contact_sheet.png`` beside it."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m handgrad.data.scenes", description=main.__doc__)
    p.add_argument("out")
    p.add_argument("--split", choices=tuple(_SPLIT_ID), default="test")
    p.add_argument("--n", type=int, default=None, help="scenes to export (default: the whole split)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ds = DetectionScenes(a.split, size=a.n, seed=a.seed)
    path = export_coco(ds, a.out)
    sheet = contact_sheet(ds, Path(a.out) / "contact_sheet.png")
    print(f"{path}\n{sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
