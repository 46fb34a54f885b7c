"""Generated single-object tracking sequences with exact ground truth, in the style of OTB.

A sequence is a camera panning (and, for scale variation, zooming) over a real photograph, with a sprite
(:mod:`handgrad.data.sprites`: Noto emoji or a tinted Fashion-MNIST item, exact mask) moving along a smooth
path. Each sequence carries OTB attribute tags, and the recipe for each tag is:

========  ===================================================================================================
tag       how it is made (the test checks the measured effect)
========  ===================================================================================================
``SV``    the camera zooms and the object grows/shrinks: its box area ratio to frame 1 leaves [1/2, 2]^2
``IV``    a global gain between ~0.35 and ~1.5 and a moving shadow ramp over the whole frame
``OCC``   an occluder passes over the object; ``POC``: partial (never hidden), ``FOC``: fully hidden a while
``FM``    bursts of motion faster than 20 px per frame (OTB's threshold)
``IPR``   the object swings in the image plane (+-40..75 degrees)
``BC``    the photograph is littered with other sprites (all classes) and textured
``DIS``   2-3 other sprites of the object's own class move around and cross it
========  ===================================================================================================

Ground truth per frame: the box ``(x, y, w, h)`` (0-based, tight around the object's full mask, occluded
parts included, as OTB annotates), the visible fraction of the mask, and ``visible = fraction >= 0.1``.
The object stays inside the frame. Everything is drawn from ``numpy.random.default_rng(seed)``; frames are
rendered on demand (a 300-frame sequence holds only its geometry), so a benchmark costs little memory.

    seq = make_sequence(seed=3, attributes=("SV", "OCC", "FOC"), n_frames=150)
    frame = seq[10]                  # uint8 (240, 320, 3)
    seq.boxes[10], seq.visible[10]   # exact truth
    bench = make_benchmark()         # 32 sequences of 100-300 frames, each tag on >= 8 of them
    write_benchmark("otb-generated", bench)   # OTB folders
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from handgrad.data.otb import TrackingSequence, write_otb_sequence
from handgrad.data.sprites import BackgroundBank, Sprite, SpriteBank
from handgrad.tracking._image import subwindow

__all__ = ["make_sequence", "make_benchmark", "write_benchmark", "SequenceRenderer", "TAGS", "BENCHMARK_TAGS"]

TAGS = ("SV", "IV", "OCC", "POC", "FOC", "FM", "IPR", "BC", "DIS")
BENCHMARK_TAGS = ("SV", "IV", "OCC", "FM", "IPR", "BC", "DIS")  # the per-attribute table's columns


def _smooth_path(rng: np.random.Generator, n: int, lo: float, hi: float, knots_every: float) -> np.ndarray:
    """A smooth random curve in [lo, hi]: random control points every ``knots_every`` frames joined by a
    cubic (Catmull-Rom) spline."""
    from scipy.interpolate import CubicSpline

    k = max(2, int(np.ceil(n / knots_every)) + 1)
    tk = np.linspace(0, n - 1, k)
    vk = rng.uniform(lo, hi, k)
    return np.clip(CubicSpline(tk, vk, bc_type="natural")(np.arange(n)), lo, hi)


@dataclass
class _Layer:
    """A sprite drawn at a centre, size and angle per frame."""

    sprite: Sprite
    cx: np.ndarray
    cy: np.ndarray
    height: np.ndarray
    angle: np.ndarray


def _transform(sprite: Sprite, height: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The sprite resized to ``height`` (aspect kept) and rotated by ``angle`` degrees (counter-clockwise):
    colours bilinear, mask nearest (so the mask is exactly the pixels pasted)."""
    h0, w0 = sprite.mask.shape
    h = max(2, int(round(height)))
    w = max(2, int(round(height * w0 / h0)))
    rgb = Image.fromarray(sprite.rgb).resize((w, h), Image.BILINEAR)
    mask = Image.fromarray(sprite.mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    if abs(angle) > 1e-6:
        rgb = rgb.rotate(angle, Image.BILINEAR, expand=True)
        mask = mask.rotate(angle, Image.NEAREST, expand=True)
    return np.asarray(rgb), np.asarray(mask) > 127


def _place(shape: tuple[int, int], cx: float, cy: float, mh: int, mw: int, keep_inside: bool) -> tuple[int, int]:
    H, W = shape
    x0, y0 = int(round(cx - mw / 2)), int(round(cy - mh / 2))
    if keep_inside:
        x0 = min(max(x0, 0), max(W - mw, 0))
        y0 = min(max(y0, 0), max(H - mh, 0))
    return x0, y0


def _paste(frame: np.ndarray, rgb: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Paste ``rgb`` under ``mask`` at ``(x0, y0)`` (clipped to the frame); returns the frame-sized mask."""
    H, W = frame.shape[:2]
    full = np.zeros((H, W), bool)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + mask.shape[0], H), min(x0 + mask.shape[1], W)
    if ye <= ys or xe <= xs:
        return full
    m = mask[ys - y0:ye - y0, xs - x0:xe - x0]
    region = frame[ys:ye, xs:xe]
    region[m] = rgb[ys - y0:ye - y0, xs - x0:xe - x0][m]
    full[ys:ye, xs:xe] = m
    return full


class SequenceRenderer:
    """The recipe of one sequence; ``render(t)`` draws frame ``t``. See the module docstring."""

    def __init__(self, seed: int, attributes: Sequence[str] = (), n_frames: int = 150,
                 size: tuple[int, int] = (240, 320), split: str = "test", sprites: SpriteBank | None = None,
                 backgrounds: BackgroundBank | None = None) -> None:
        bad = [a for a in attributes if a not in TAGS]
        if bad:
            raise ValueError(f"make_sequence: unknown attributes {bad}; known: {', '.join(TAGS)}")
        if n_frames < 2 or min(size) < 64:
            raise ValueError(f"make_sequence: need n_frames >= 2 and a frame of at least 64x64, got {n_frames}, {size}")
        attrs = set(attributes)
        if attrs & {"POC", "FOC"}:
            attrs.add("OCC")
        if "OCC" in attrs and not attrs & {"POC", "FOC"}:
            attrs.add("POC")
        self.attributes = [a for a in TAGS if a in attrs]
        self.n, self.size = int(n_frames), (int(size[0]), int(size[1]))
        rng = np.random.default_rng(seed)
        sprites = sprites or _sprite_bank(split)
        backgrounds = backgrounds or _background_bank(split)
        H, W = self.size
        n = self.n

        # -- the photograph and the camera ------------------------------------------------------------------
        photos = [p for p in backgrounds.images if min(p.shape[:2]) >= 200] or backgrounds.images
        photo = photos[int(rng.integers(len(photos)))].astype(np.float32)
        # the viewport at zoom 1 spans ~55% of the photo's limiting side: room to pan
        base = min(photo.shape[0] / H, photo.shape[1] / W) * rng.uniform(0.45, 0.6)
        zoom = np.ones(n)
        if "SV" in attrs:  # the camera zooms in or out by 1.6-2x
            z_end = rng.uniform(1.6, 2.0) ** (1 if rng.random() < 0.5 else -1)
            ta, tb = sorted(rng.uniform(0.05, 0.95, 2) * (n - 1))
            u = np.clip((np.arange(n) - ta) / max(tb - ta, 3.0), 0, 1)
            zoom = z_end ** (u * u * (3 - 2 * u))  # a smooth-step zoom between two random times
        view_w, view_h = W * base / zoom, H * base / zoom
        mx, my = view_w.max() / 2, view_h.max() / 2
        cam_x = _smooth_path(rng, n, min(mx, photo.shape[1] / 2), max(photo.shape[1] - mx, photo.shape[1] / 2), 60)
        cam_y = _smooth_path(rng, n, min(my, photo.shape[0] / 2), max(photo.shape[0] - my, photo.shape[0] / 2), 60)
        if "BC" in attrs:  # clutter: sprites of every class printed on the photo (they move with the camera)
            photo = photo.copy()
            for _ in range(int(rng.integers(25, 40))):
                hh = int(rng.uniform(0.1, 0.25) * H * base)
                s = (sprites.sample(rng, int(rng.integers(len(sprites.classes))), hh, hh) if rng.random() < 0.6
                     else sprites.sample_distractor(rng, hh, hh))
                _paste(photo, s.rgb.astype(np.float32), s.mask, int(rng.integers(0, photo.shape[1] - hh)),
                       int(rng.integers(0, photo.shape[0] - hh)))
        self._photo, self._cam = photo, (cam_x, cam_y, view_w, view_h)

        # -- the target -----------------------------------------------------------------------------------
        self.target_class = int(rng.integers(len(sprites.classes)))
        aspect = rng.uniform(0.75, 1.33)
        hi = 112
        target = sprites.sample(rng, self.target_class, hi, max(8, int(hi * aspect)))
        h0 = rng.uniform(0.16, 0.24) * H  # its height in frame 1
        own = np.ones(n)
        if "SV" in attrs:  # on top of the zoom, the object itself approaches or recedes a little
            own = _smooth_path(rng, n, 0.95, 1.05, n / 3)
            own = own / own[0]
        height = h0 * zoom * own
        margin = 0.75 * height.max()
        cx = _smooth_path(rng, n, margin, W - margin, 45)
        cy = _smooth_path(rng, n, margin, H - margin, 45)
        if "FM" in attrs:  # 2-3 jumps of 65+ px in 3 frames (> 20 px per frame), towards the roomier side
            for _ in range(int(rng.integers(2, 4))):
                t0 = int(rng.integers(5, n - 8))
                right, left = W - margin - cx[t0], cx[t0] - margin
                dx = min(rng.uniform(0.3, 0.45) * W, max(right, left)) * (1 if right >= left else -1)
                cx = np.clip(cx + dx * np.clip((np.arange(n) - t0) / 3.0, 0, 1), margin, W - margin)
        angle = np.zeros(n)
        if "IPR" in attrs:
            # a swing of +-40..75 degrees with a 60-150 frame period, so short sequences rotate too
            period, amp = rng.uniform(60, 150), rng.uniform(40, 75)
            angle = amp * np.sin(2 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi))
            angle -= angle[0]
        self._target = _Layer(target, cx, cy, height, angle)

        # -- same-class distractors ------------------------------------------------------------------------
        self._distractors: list[_Layer] = []
        if "DIS" in attrs:
            for _ in range(int(rng.integers(2, 4))):
                d = sprites.sample(rng, self.target_class, hi, max(8, int(hi * rng.uniform(0.75, 1.33))))
                # it crosses the target's path: start near the target at a random time
                dcx = _smooth_path(rng, n, margin, W - margin, 35)
                dcy = _smooth_path(rng, n, margin, H - margin, 35)
                tc = int(rng.integers(n // 5, n))
                w = np.exp(-0.5 * ((np.arange(n) - tc) / (n / 8)) ** 2)
                dcx, dcy = (1 - w) * dcx + w * (cx + 0.6 * h0), (1 - w) * dcy + w * cy
                self._distractors.append(_Layer(d, dcx, dcy, h0 * zoom * rng.uniform(0.85, 1.15), np.zeros(n)))

        # -- occluders ------------------------------------------------------------------------------------
        self._occluders: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        ts = np.arange(n)
        if "FOC" in attrs:  # a card from another photo, larger than the object, riding over it
            t0 = int(rng.integers(n // 4, 3 * n // 4))
            side = 1.9 * height[t0]
            card = photos[int(rng.integers(len(photos)))]
            cy0, cx0 = int(rng.integers(0, card.shape[0] - 40)), int(rng.integers(0, card.shape[1] - 40))
            card = card[cy0:cy0 + 200, cx0:cx0 + 200].astype(np.uint8)
            card = np.asarray(Image.fromarray(card).resize((int(side), int(side)), Image.BILINEAR))
            v = rng.choice([-1, 1]) * rng.uniform(1.0, 2.0)  # px per frame relative to the target
            self._occluders.append((card, cx + v * (ts - t0), cy + 0.2 * v * (ts - t0), np.ones(card.shape[:2], bool)))
        if "POC" in attrs:  # a distractor sprite sliding across the object's side: covers part of it
            for _ in range(int(rng.integers(1, 3))):
                t0 = int(rng.integers(n // 6, 5 * n // 6))
                s = sprites.sample_distractor(rng, int(0.9 * height[t0]), int(0.7 * height[t0]))
                v = rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)
                off = rng.choice([-1, 1]) * 0.45 * height[t0]
                self._occluders.append((s.rgb, cx + v * (ts - t0), cy + off, s.mask))

        # -- illumination ---------------------------------------------------------------------------------
        self._gain = np.ones(n)
        self._ramp: tuple[np.ndarray, np.ndarray] | None = None
        if "IV" in attrs:
            self._gain = _smooth_path(rng, n, 0.35, 1.5, 35)
            self._ramp = (_smooth_path(rng, n, 0, 2 * np.pi, 80), _smooth_path(rng, n, 0.3, 0.8, 50))

        # -- exact geometry (rendering the masks, not the frames) ------------------------------------------
        boxes, frac = np.zeros((n, 4)), np.zeros(n)
        for t in range(n):
            tm, vis = self._masks(t)
            ys, xs = np.nonzero(tm)
            boxes[t] = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
            frac[t] = vis.sum() / tm.sum()
        self.boxes, self.visibility = boxes, frac
        self.visible = frac >= 0.1

    # -- drawing -------------------------------------------------------------------------------------------
    def _target_placement(self, t: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        L = self._target
        rgb, mask = _transform(L.sprite, L.height[t], L.angle[t])
        x0, y0 = _place(self.size, L.cx[t], L.cy[t], *mask.shape, keep_inside=True)
        return rgb, mask, x0, y0

    def _occluder_masks(self, t: int, frame: np.ndarray | None) -> np.ndarray:
        H, W = self.size
        occ = np.zeros((H, W), bool)
        for rgb, ox, oy, m in self._occluders:
            x0, y0 = _place(self.size, ox[t], oy[t], *m.shape, keep_inside=False)
            canvas = frame if frame is not None else np.zeros((H, W, 3), np.float32)
            occ |= _paste(canvas, rgb, m, x0, y0)
        return occ

    def _masks(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, mask, x0, y0 = self._target_placement(t)
        tm = _paste(np.zeros((*self.size, 3), np.float32), rgb, mask, x0, y0)
        return tm, tm & ~self._occluder_masks(t, None)

    def render(self, t: int, draw_target: bool = True) -> np.ndarray:
        """Frame ``t`` as ``(H, W, 3)`` uint8 (``draw_target=False``: the same frame without the object)."""
        if not 0 <= t < self.n:
            raise IndexError(f"frame {t} outside 0..{self.n - 1}")
        H, W = self.size
        cam_x, cam_y, vw, vh = self._cam
        frame = subwindow(self._photo, (cam_x[t], cam_y[t]), (vw[t], vh[t]), (W, H))
        for L in self._distractors:
            rgb, m = _transform(L.sprite, L.height[t], L.angle[t])
            _paste(frame, rgb, m, *_place(self.size, L.cx[t], L.cy[t], *m.shape, keep_inside=False))
        if draw_target:
            rgb, mask, x0, y0 = self._target_placement(t)
            _paste(frame, rgb, mask, x0, y0)
        self._occluder_masks(t, frame)
        gain = np.float32(self._gain[t])
        if self._ramp is not None:  # a shadow edge sweeping across the frame
            ang, depth = self._ramp[0][t], self._ramp[1][t]
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
            proj = ((xx - W / 2) * np.cos(ang) + (yy - H / 2) * np.sin(ang)) / (0.25 * max(H, W))
            shade = 1.0 - depth * 0.5 * (1.0 + np.tanh(proj))
            frame *= (gain * shade)[:, :, None]
        elif gain != 1:
            frame *= gain
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


class _Frames:
    """Lazy frame list: ``frames[t]`` renders frame ``t``."""

    def __init__(self, renderer: SequenceRenderer) -> None:
        self.renderer = renderer

    def __len__(self) -> int:
        return self.renderer.n

    def __getitem__(self, t: int) -> np.ndarray:
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        return self.renderer.render(int(t))


@functools.cache
def _sprite_bank(split: str) -> SpriteBank:
    return SpriteBank(split)


@functools.cache
def _background_bank(split: str) -> BackgroundBank:
    return BackgroundBank(split)


def make_sequence(seed: int, attributes: Sequence[str] = (), n_frames: int = 150, size: tuple[int, int] = (240, 320),
                  split: str = "test", name: str | None = None) -> TrackingSequence:
    """One generated sequence (frames rendered lazily) with its exact boxes, visibility and tags.

    ``split``: ``"test"`` for evaluation (held-out sprites and photographs), ``"train"`` to train trackers.
    """
    r = SequenceRenderer(seed, attributes, n_frames, size, split)
    seq = TrackingSequence(name or f"gen{seed:03d}", _Frames(r), r.boxes, r.visible, list(r.attributes),
                           r.visibility)
    seq.renderer = r  # type: ignore[attr-defined]  # for tests and figures: render(t, draw_target=False)
    return seq


def benchmark_recipes(n_sequences: int = 32, seed: int = 0, min_frames: int = 100,
                      max_frames: int = 300) -> list[tuple[int, tuple[str, ...], int]]:
    """``(seed, tags, n_frames)`` per sequence: tag ``i % 8`` first and, on three of every four sequences,
    a second tag ``(i % 8 + 2 + i // 8) % 8``: with 32 sequences each of the 8 tags is on 7 of them."""
    primary = ("SV", "IV", "POC", "FOC", "FM", "IPR", "BC", "DIS")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_sequences):
        tags = [primary[i % 8]]
        if i % 4 != 3:
            second = primary[(i % 8 + 2 + i // 8) % 8]
            if {tags[0], second} == {"POC", "FOC"}:  # one kind of occlusion per sequence
                second = primary[(i % 8 + 3 + i // 8) % 8]
            tags.append(second)
        out.append((int(seed * 1000 + i), tuple(dict.fromkeys(tags)), int(rng.integers(min_frames, max_frames + 1))))
    return out


def make_benchmark(n_sequences: int = 32, seed: int = 0, min_frames: int = 100, max_frames: int = 300,
                   size: tuple[int, int] = (240, 320), split: str = "test") -> list[TrackingSequence]:
    """The generated OTB-style benchmark: ``n_sequences`` seeded sequences (see :func:`benchmark_recipes`)."""
    return [make_sequence(s, tags, n, size, split, name=f"gen{i:02d}-{'-'.join(tags)}")
            for i, (s, tags, n) in enumerate(benchmark_recipes(n_sequences, seed, min_frames, max_frames))]


def write_benchmark(root: str, sequences: Sequence[TrackingSequence], progress: bool | None = None) -> list[str]:
    """Write each sequence as an OTB folder ``root/NAME`` (frames, groundtruth_rect.txt, attributes.txt,
    visible.txt); returns the folders."""
    from tqdm import tqdm

    folders = []
    quiet = progress is False or (progress is None and not sys.stderr.isatty())
    for seq in tqdm(sequences, desc="writing OTB folders", disable=quiet, leave=False):
        folder = os.path.join(root, seq.name)
        write_otb_sequence(folder, seq, seq.boxes, seq.visible, seq.attributes)
        folders.append(folder)
    return folders
