"""Sprites with exact masks and real photographs to paste them on: the parts of generated detection scenes.

Two sources of objects, both offline:

* **Noto Color Emoji** (Debian ``fonts-noto-color-emoji``, OFL), rendered with Pillow at the font's native
  size 109 with ``embedded_color=True``; the glyph's alpha channel gives the mask. After resizing, the mask
  is ``alpha >= 128`` and only those pixels are pasted, so the mask is exactly the pixels that changed.
* **Fashion-MNIST** items (Debian ``dataset-fashion-mnist``, MIT), mask = ``pixel > 0``, tinted with a random
  colour. Train scenes draw items from training images 0..49,999, val scenes from 50,000..59,999 and test
  scenes from the official test set, so no item is shared across splits.

Label classes (``LABEL_CLASSES``, 12) and distractor classes (``DISTRACTOR_CLASSES``, objects outside the
label set that a detector must learn to ignore) are lists of ``SpriteClass(name, source, keys)``.

Backgrounds (:class:`BackgroundBank`): scikit-image's bundled photographs (used only as image files), plus
OpenCV's sample photographs (Debian ``opencv-doc``) and ViSP's images (Debian ``visp-images-data``) when
installed. The photographs are split between train and val/test by name, so test scenes have unseen
backgrounds; each sample is a random crop with a random scale, flip and colour jitter.

Typical use::

    rng = numpy.random.default_rng(0)
    sprites, backgrounds = SpriteBank("train"), BackgroundBank("train")
    s = sprites.sample(rng, 3)                     # a Sprite of label class 3 (0-based)
    s = resize_sprite(s, height=40, width=30)      # exact mask kept
    bg = backgrounds.sample(rng, (256, 256))       # uint8 (256, 256, 3)
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy

__all__ = ["Sprite", "SpriteClass", "SpriteBank", "BackgroundBank", "LABEL_CLASSES", "DISTRACTOR_CLASSES",
           "render_emoji_sprite", "resize_sprite", "background_paths"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sprite:
    """An object image ``rgb uint8 (h, w, 3)`` and its exact mask ``mask bool (h, w)``."""

    rgb: numpy.ndarray
    mask: numpy.ndarray


@dataclass(frozen=True)
class SpriteClass:
    """One object class: ``source`` is ``'emoji'`` (keys = characters) or ``'fashion'`` (keys = label ids)."""

    name: str
    source: str
    keys: tuple


LABEL_CLASSES: tuple[SpriteClass, ...] = (
    SpriteClass("cat", "emoji", ("\U0001f431", "\U0001f408")),
    SpriteClass("dog", "emoji", ("\U0001f436", "\U0001f415")),
    SpriteClass("apple", "emoji", ("\U0001f34e", "\U0001f34f")),
    SpriteClass("car", "emoji", ("\U0001f697", "\U0001f699")),
    SpriteClass("ball", "emoji", ("\u26bd", "\U0001f3c0")),
    SpriteClass("tree", "emoji", ("\U0001f332", "\U0001f333")),
    SpriteClass("fish", "emoji", ("\U0001f41f", "\U0001f420")),
    SpriteClass("flower", "emoji", ("\U0001f33b", "\U0001f337")),
    SpriteClass("t-shirt", "fashion", (0,)),
    SpriteClass("trouser", "fashion", (1,)),
    SpriteClass("sneaker", "fashion", (7,)),
    SpriteClass("bag", "fashion", (8,)),
)
DISTRACTOR_CLASSES: tuple[SpriteClass, ...] = (
    SpriteClass("star", "emoji", ("\u2b50",)),
    SpriteClass("balloon", "emoji", ("\U0001f388",)),
    SpriteClass("key", "emoji", ("\U0001f511",)),
    SpriteClass("banana", "emoji", ("\U0001f34c",)),
    SpriteClass("house", "emoji", ("\U0001f3e0",)),
    SpriteClass("bicycle", "emoji", ("\U0001f6b2",)),
    SpriteClass("dress", "fashion", (3,)),
    SpriteClass("ankle boot", "fashion", (9,)),
)

_FONT_SIZE = 109  # the only size at which Noto Color Emoji's bitmap strikes render


@functools.cache
def render_emoji_sprite(char: str) -> Sprite:
    """One emoji at the font's native size (about 120 px), cropped to its alpha; mask = ``alpha >= 128``."""
    rgba = _emoji_rgba(char)
    return Sprite(numpy.ascontiguousarray(rgba[..., :3]), rgba[..., 3] >= 128)


@functools.cache
def _emoji_rgba(char: str) -> numpy.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    from handgrad.data.emoji import _font_path

    font = ImageFont.truetype(_font_path(), _FONT_SIZE)
    canvas = Image.new("RGBA", (170, 170), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((15, 15), char, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"render_emoji_sprite: the emoji font draws nothing for {char!r} (U+{ord(char):04X})")
    a = numpy.asarray(canvas.crop(box), dtype=numpy.uint8).copy()
    a.flags.writeable = False
    return a


def resize_sprite(sprite: Sprite, height: int, width: int, alpha: numpy.ndarray | None = None) -> Sprite:
    """Resize a sprite to ``(height, width)``: colours bilinear, the mask by nearest neighbour (or, given a
    soft ``alpha`` in 0..255 of the sprite's size, bilinear alpha thresholded at 128). The mask stays exact:
    the scene pastes only the pixels under it."""
    from PIL import Image

    if height < 1 or width < 1:
        raise ValueError(f"resize_sprite: size must be positive, got ({height}, {width})")
    rgb = numpy.asarray(Image.fromarray(sprite.rgb).resize((width, height), Image.BILINEAR))
    if alpha is not None:
        a = numpy.asarray(Image.fromarray(alpha).resize((width, height), Image.BILINEAR))
        mask = a >= 128
    else:
        m = Image.fromarray(sprite.mask.astype(numpy.uint8) * 255)
        mask = numpy.asarray(m.resize((width, height), Image.NEAREST)) > 0
    return Sprite(rgb, mask)


@functools.cache
def _fashion_split(split: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    from handgrad.data.fashion_mnist import load_fashion_mnist

    if split == "test":
        return load_fashion_mnist(train=False)
    x, y = load_fashion_mnist(train=True)
    return (x[:50000], y[:50000]) if split == "train" else (x[50000:], y[50000:])


class SpriteBank:
    """Sprites of the label classes and of the distractor classes for one split.

    ``sample(rng, k, height, width)`` returns a random sprite of label class ``k`` (0-based index into
    ``classes``) already resized to ``(height, width)``; ``sample_distractor`` one of a random distractor
    class. Emoji are the same drawings in every split (their variety comes from scale, aspect, flips and
    colour jitter); Fashion-MNIST items are disjoint across splits.
    """

    def __init__(self, split: str = "train", classes: tuple[SpriteClass, ...] = LABEL_CLASSES,
                 distractors: tuple[SpriteClass, ...] = DISTRACTOR_CLASSES) -> None:
        if split not in SPLITS:
            raise ValueError(f"SpriteBank: split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.classes = tuple(classes)
        self.distractors = tuple(distractors)
        self._fashion: dict[int, numpy.ndarray] = {}
        if any(c.source == "fashion" for c in self.classes + self.distractors):
            x, y = _fashion_split(split)
            for c in self.classes + self.distractors:
                if c.source == "fashion":
                    for k in c.keys:
                        self._fashion[k] = x[y == k]
        for c in self.classes + self.distractors:
            if c.source not in ("emoji", "fashion"):
                raise ValueError(f"SpriteBank: class {c.name!r} has unknown source {c.source!r}")
            if c.source == "emoji":
                for ch in c.keys:
                    _emoji_rgba(ch)  # fail early if the font lacks a glyph

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def _draw(self, rng: numpy.random.Generator, c: SpriteClass, height: int, width: int) -> Sprite:
        key = c.keys[int(rng.integers(len(c.keys)))]
        if c.source == "emoji":
            rgba = _emoji_rgba(key)
            s = resize_sprite(Sprite(rgba[..., :3], rgba[..., 3] >= 128), height, width, alpha=rgba[..., 3])
            rgb = s.rgb.astype(numpy.float32)
            # colour jitter: brightness and contrast per sprite (emoji are few drawings)
            rgb = (rgb - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-25, 25)
        else:
            items = self._fashion[key]
            g = items[int(rng.integers(len(items)))]
            s = resize_sprite(Sprite(numpy.repeat(g[..., None], 3, 2), g > 0), height, width)
            tint = rng.uniform(0.35, 1.0, 3)  # a random colour; the item keeps its shading
            rgb = s.rgb.astype(numpy.float32) * tint * rng.uniform(0.9, 1.6) + rng.uniform(0, 40)
        mask = s.mask
        if rng.random() < 0.5:  # horizontal flip
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        return Sprite(numpy.clip(rgb, 0, 255).astype(numpy.uint8), numpy.ascontiguousarray(mask))

    def sample(self, rng: numpy.random.Generator, k: int, height: int, width: int) -> Sprite:
        if not 0 <= k < len(self.classes):
            raise ValueError(f"SpriteBank.sample: class index {k} outside 0..{len(self.classes) - 1}")
        return self._draw(rng, self.classes[k], height, width)

    def sample_distractor(self, rng: numpy.random.Generator, height: int, width: int) -> Sprite:
        if not self.distractors:
            raise ValueError("SpriteBank.sample_distractor: no distractor classes")
        return self._draw(rng, self.distractors[int(rng.integers(len(self.distractors)))], height, width)


# -- backgrounds --------------------------------------------------------------------------------------------

_SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                   "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
                   "motorcycle_right.png", "retina.jpg", "rocket.jpg", "page.png", "cell.png")
_OPENCV_DIRS = ("/usr/share/doc/opencv-doc/examples/data", "/usr/share/opencv4/samples/data")
_VISP_DIR = "/usr/share/visp-images-data/ViSP-images"
_EXTS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff")


def background_paths() -> list[Path]:
    """Every photograph found: scikit-image's bundled ones, then OpenCV's and ViSP's if installed.

    ``$HANDGRAD_BACKGROUNDS`` (a folder of images) replaces them all, for a user's own backgrounds.
    """
    env = os.environ.get("HANDGRAD_BACKGROUNDS")
    if env:
        return sorted(p for p in Path(env).rglob("*") if p.suffix.lower() in _EXTS)
    out: list[Path] = []
    try:
        import skimage

        d = Path(skimage.__file__).parent / "data"
        out += [d / n for n in _SKIMAGE_PHOTOS if (d / n).exists()]
    except ImportError:
        pass
    for d in _OPENCV_DIRS:
        out += sorted(Path(p) for p in glob.glob(f"{d}/*") if Path(p).suffix.lower() in (".jpg", ".png"))
    if Path(_VISP_DIR).is_dir():
        # one frame per folder: sequences would otherwise flood the list with near-duplicates
        seen = set()
        for p in sorted(Path(_VISP_DIR).rglob("*")):
            if p.suffix.lower() in _EXTS and p.parent not in seen:
                seen.add(p.parent)
                out.append(p)
    return out


@functools.cache
def _load_photo(path: str) -> numpy.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = numpy.asarray(im.convert("RGB"))
    except OSError:
        return None
    a.flags.writeable = False  # shared between banks
    return a


class BackgroundBank:
    """Real photographs for one split; ``sample(rng, (H, W))`` is a random crop as ``uint8 (H, W, 3)``.

    Photographs are assigned to splits by position in :func:`background_paths`: every 4th one (index % 4 ==
    3) is held out for val and test, the rest are train. Images smaller than 64 px are skipped.
    """

    def __init__(self, split: str = "train", paths: list[Path] | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"BackgroundBank: split must be one of {SPLITS}, got {split!r}")
        paths = background_paths() if paths is None else list(paths)
        if split == "train":
            chosen = [p for i, p in enumerate(paths) if i % 4 != 3]
        else:
            chosen = [p for i, p in enumerate(paths) if i % 4 == 3]
        self.images: list[numpy.ndarray] = []
        self.paths: list[Path] = []
        for p in chosen:
            a = _load_photo(str(p))
            if a is not None and min(a.shape[:2]) >= 64:
                self.images.append(a)
                self.paths.append(p)
        if not self.images:
            raise FileNotFoundError(
                f"BackgroundBank: no background photographs for split {split!r}: install scikit-image "
                "(`bash setup.sh`) or point $HANDGRAD_BACKGROUNDS at a folder of images")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, rng: numpy.random.Generator, size: tuple[int, int] = (256, 256)) -> numpy.ndarray:
        from PIL import Image

        h, w = size
        img = self.images[int(rng.integers(len(self.images)))]
        ih, iw = img.shape[:2]
        # crop a window of random scale (20% .. 100% of the shorter side), then resize to (h, w)
        side = rng.uniform(0.2, 1.0) * min(ih, iw)
        ch, cw = max(8, int(side * min(1.0, h / w))), max(8, int(side * min(1.0, w / h)))
        y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
        crop = Image.fromarray(img[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR)
        out = numpy.asarray(crop, dtype=numpy.float32)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        # colour jitter: per-channel gain, brightness, contrast
        out = (out * rng.uniform(0.85, 1.15, 3) - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-30, 30)
        return numpy.clip(out, 0, 255).astype(numpy.uint8)
