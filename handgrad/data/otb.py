"""Tracking sequences: OTB-format folders, video files, and ViSP's ``mire-2`` with its derived ground truth.

The OTB layout (Wu, Lim & Yang, CVPR 2013 / PAMI 2015), which :func:`write_otb_sequence` also writes::

    SEQ/img/0001.jpg ...            frames (any Pillow format; also accepted directly in SEQ/)
    SEQ/groundtruth_rect.txt        one "x,y,w,h" per frame (commas, tabs or spaces), 1-based like OTB's
    SEQ/attributes.txt              optional: the OTB attribute tags, comma-separated (e.g. "SV,OCC,FM")
    SEQ/visible.txt                 optional: 1/0 per frame (0: the target is fully hidden)

Boxes are returned 0-based (``x - 1``, ``y - 1``: pixel ``i`` covers ``[i, i + 1)``), which is what the
trackers take; the files keep OTB's 1-based convention so that other tools read them unchanged.

Video files are decoded by an ``ffmpeg`` executable (Debian's ``ffmpeg`` on the ``PATH`` or the binary of
the PyPI ``imageio-ffmpeg`` wheel); GIFs and other multi-frame images by Pillow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

__all__ = ["TrackingSequence", "load_otb_sequence", "load_otb", "write_otb_sequence", "read_video",
           "frame_source", "load_mire2", "mire2_boxes", "MIRE2_DIR", "SequenceError"]

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff")
_VIDEO_EXT = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".gif")
MIRE2_DIR = "/usr/share/visp-images-data/ViSP-images/mire-2"

# OTB's attribute tags (Wu et al. 2015, Table 1); the generated benchmark uses these names.
ATTRIBUTES = {
    "IV": "illumination variation", "SV": "scale variation", "OCC": "occlusion", "DEF": "deformation",
    "MB": "motion blur", "FM": "fast motion", "IPR": "in-plane rotation", "OPR": "out-of-plane rotation",
    "OV": "out of view", "BC": "background clutter", "LR": "low resolution", "DIS": "same-class distractors",
}


class SequenceError(ValueError):
    """An unusable sequence (empty folder, unreadable video, malformed ground truth)."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass
class TrackingSequence:
    """A sequence of frames with (optional) ground truth.

    ``frames`` is a list of image paths (read lazily) or of ``H x W x 3`` uint8 arrays; ``boxes`` is
    ``(N, 4)`` float ``(x, y, w, h)`` 0-based, or ``None`` without labels; ``visible`` ``(N,)`` bool.
    """

    name: str
    frames: list
    boxes: np.ndarray | None = None
    visible: np.ndarray | None = None
    attributes: list[str] = field(default_factory=list)
    visibility: np.ndarray | None = None  # (N,) visible fraction of the object, where known

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        f = self.frames[i]
        if isinstance(f, np.ndarray):
            return f
        with Image.open(f) as img:
            return _to_rgb(img)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _image_files(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(_IMAGE_EXT)]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _read_boxes(path: str) -> np.ndarray:
    rows = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                raise SequenceError(f"{path}:{k}: expected 'x,y,w,h', got {line.strip()!r}") from None
            if len(vals) != 4:
                raise SequenceError(f"{path}:{k}: expected 4 numbers (x,y,w,h), got {len(vals)}")
            rows.append(vals)
    if not rows:
        raise SequenceError(f"{path}: no boxes")
    b = np.asarray(rows, dtype=np.float64)
    b[:, :2] -= 1.0  # OTB's files are 1-based (MATLAB)
    return b


def load_otb_sequence(folder: str) -> TrackingSequence:
    """Read one OTB-format sequence folder (see the module docstring)."""
    if not os.path.isdir(folder):
        raise SequenceError(f"not a folder: {folder}")
    img_dir = os.path.join(folder, "img")
    frames = _image_files(img_dir) if os.path.isdir(img_dir) else _image_files(folder)
    if not frames:
        raise SequenceError(f"no frames ({', '.join(_IMAGE_EXT)}) in {folder}")
    gt_path = os.path.join(folder, "groundtruth_rect.txt")
    boxes = _read_boxes(gt_path) if os.path.exists(gt_path) else None
    if boxes is not None and len(boxes) != len(frames):
        # A few OTB sequences annotate a sub-range; keep the common prefix rather than fail.
        n = min(len(boxes), len(frames))
        frames, boxes = frames[:n], boxes[:n]
    visible = None
    vis_path = os.path.join(folder, "visible.txt")
    if os.path.exists(vis_path):
        visible = np.loadtxt(vis_path, dtype=np.int64, ndmin=1).astype(bool)[: len(frames)]
    elif boxes is not None:
        visible = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    attrs: list[str] = []
    attr_path = os.path.join(folder, "attributes.txt")
    if os.path.exists(attr_path):
        with open(attr_path) as f:
            attrs = [a.strip() for a in re.split(r"[,\s]+", f.read()) if a.strip()]
    return TrackingSequence(os.path.basename(os.path.normpath(folder)), frames, boxes, visible, attrs)


def load_otb(root: str) -> list[TrackingSequence]:
    """Every sequence folder (one with ``groundtruth_rect.txt``) directly under ``root``, sorted by name."""
    if not os.path.isdir(root):
        raise SequenceError(f"not a folder: {root}")
    seqs = [load_otb_sequence(os.path.join(root, d)) for d in sorted(os.listdir(root), key=_natural_key)
            if os.path.isfile(os.path.join(root, d, "groundtruth_rect.txt"))]
    if not seqs:
        raise SequenceError(f"no OTB sequences (folders with groundtruth_rect.txt) in {root}")
    return seqs


def write_otb_sequence(folder: str, frames: Sequence[np.ndarray], boxes: np.ndarray,
                       visible: np.ndarray | None = None, attributes: Sequence[str] = (),
                       quality: int = 92) -> None:
    """Write ``frames`` (uint8 ``H x W x 3``) and 0-based ``boxes`` as an OTB folder (1-based file)."""
    img_dir = os.path.join(folder, "img")
    os.makedirs(img_dir, exist_ok=True)
    for i, f in enumerate(frames, 1):
        Image.fromarray(np.asarray(f, dtype=np.uint8)).save(os.path.join(img_dir, f"{i:04d}.jpg"), quality=quality)
    b = np.asarray(boxes, dtype=np.float64).copy()
    b[:, :2] += 1.0
    np.savetxt(os.path.join(folder, "groundtruth_rect.txt"), b, fmt="%.2f", delimiter=",")
    if visible is not None:
        np.savetxt(os.path.join(folder, "visible.txt"), np.asarray(visible, dtype=np.int64), fmt="%d")
    if attributes:
        with open(os.path.join(folder, "attributes.txt"), "w") as f:
            f.write(",".join(attributes) + "\n")


# -- video ------------------------------------------------------------------------------------------------
def _ffmpeg() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg  # the binary only; no Python decoding library

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - absent or without a binary for this platform
        return None


def read_video(path: str, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode a video file (or animated GIF) into ``H x W x 3`` uint8 frames."""
    if not os.path.isfile(path):
        raise SequenceError(f"no such video file: {path}")
    if path.lower().endswith(".gif"):
        frames = []
        try:
            with Image.open(path) as img:
                for k in range(getattr(img, "n_frames", 1)):
                    img.seek(k)
                    frames.append(_to_rgb(img))
                    if max_frames and len(frames) >= max_frames:
                        break
        except OSError as e:
            raise SequenceError(f"unreadable video {path}: {e}") from None
        return frames
    exe = _ffmpeg()
    if exe is None:
        raise SequenceError(f"cannot decode {path}: no ffmpeg (install Debian's ffmpeg or PyPI imageio-ffmpeg)")
    probe = subprocess.run([exe, "-hide_banner", "-i", path], capture_output=True, text=True)
    m = re.search(r"Video:.*?(\d{2,5})x(\d{2,5})", probe.stderr)
    if not m:
        raise SequenceError(f"unreadable video {path}: ffmpeg finds no video stream")
    w, h = int(m.group(1)), int(m.group(2))
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-i", path]
    if max_frames:
        cmd += ["-frames:v", str(int(max_frames))]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True)
    n = len(out.stdout) // (w * h * 3)
    if out.returncode != 0 or n == 0:
        msg = " ".join(out.stderr.decode(errors="replace").split())[:200]
        raise SequenceError(f"unreadable video {path}: {msg or 'no frames decoded'}")
    arr = np.frombuffer(out.stdout[: n * w * h * 3], dtype=np.uint8).reshape(n, h, w, 3)
    return list(arr)


def frame_source(source: str, max_frames: int | None = None) -> TrackingSequence:
    """A video file, a folder of frames, or an OTB sequence folder, as a :class:`TrackingSequence`."""
    if os.path.isdir(source):
        seq = load_otb_sequence(source)
        if max_frames:
            seq.frames = seq.frames[:max_frames]
        return seq
    if os.path.isfile(source):
        if not source.lower().endswith(_VIDEO_EXT):
            raise SequenceError(f"not a video file ({', '.join(_VIDEO_EXT)}) or a folder of frames: {source}")
        frames = read_video(source, max_frames)
        return TrackingSequence(os.path.splitext(os.path.basename(source))[0], frames)
    raise SequenceError(f"no such file or folder: {source}")


# -- ViSP mire-2 ------------------------------------------------------------------------------------------
def mire2_boxes(frames: Sequence[np.ndarray] | Iterator[np.ndarray], threshold: int = 200) -> np.ndarray:
    """The box of the big white disc in each ``mire-2`` frame, derived exactly: the pixels ``> threshold``,
    their 8-connected components, and among the components shaped like a filled ellipse (area / box area
    within 0.06 of ``pi / 4``, at least 150 pixels) the largest in the first frame, then in each frame the
    one whose centre is nearest the previous disc's. Returns ``(N, 4)`` ``(x, y, w, h)``, 0-based, tight
    around the thresholded pixels."""
    from scipy import ndimage

    out = []
    prev = None
    for k, frame in enumerate(frames):
        g = np.asarray(frame)
        if g.ndim == 3:
            g = g.max(axis=2)
        lab, n = ndimage.label(g > threshold, structure=np.ones((3, 3), bool))
        best = None
        for i, sl in enumerate(ndimage.find_objects(lab), 1):
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            area = int(np.count_nonzero(lab[sl] == i))
            if area < 150 or abs(area / (h * w) - np.pi / 4) > 0.06:
                continue
            box = (sl[1].start, sl[0].start, w, h)
            c = (box[0] + w / 2, box[1] + h / 2)
            key = -area if prev is None else np.hypot(c[0] - prev[0], c[1] - prev[1])
            if best is None or key < best[0]:
                best = (key, box, c)
        if best is None:
            raise SequenceError(f"mire-2 frame {k + 1}: no disc-shaped bright component")
        out.append(best[1])
        prev = best[2]
    return np.asarray(out, dtype=np.float64)


def load_mire2(root: str | None = None, max_frames: int | None = None) -> TrackingSequence:
    """ViSP's ``mire-2`` (501 frames 384x288 grey, Debian ``visp-images-data``, GPL-2) with the disc's
    box per frame from :func:`mire2_boxes`. ``root``: your copy of the folder (default the Debian path or
    ``$HANDGRAD_MIRE2``); ``max_frames``: only the first frames."""
    root = root or os.environ.get("HANDGRAD_MIRE2") or MIRE2_DIR
    if not os.path.isdir(root):
        raise SequenceError(f"mire-2 not found at {root}: install Debian's visp-images-data (bash setup.sh) "
                            f"or set HANDGRAD_MIRE2")
    files = _image_files(root)[:max_frames]
    if not files:
        raise SequenceError(f"no frames in {root}")
    seq = TrackingSequence("mire-2", files, attributes=["SV", "IPR", "OPR"])
    seq.boxes = mire2_boxes(seq)
    seq.visible = np.ones(len(files), bool)
    return seq
