"""``handgrad track SOURCE --box x,y,w,h --tracker kcf|kcf-hog|search-cnn|siamrpn [--out DIR]``.

SOURCE is a video file (decoded by ffmpeg), an animated GIF, a folder of frames or an OTB sequence folder.
Writes ``DIR/boxes.csv`` (``frame,x,y,w,h,ok``, 0-based pixels, frame 0 = the given box) and
``DIR/tracked.gif`` (the frames with the box drawn: green while ``ok``, red when the tracker reports a
loss; at most ``--gif-frames`` frames, at most 320 px wide). A bad box, an empty folder or an unreadable
video ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import numpy as np

from handgrad.errors import ExperimentError

DEFAULT_WEIGHTS_DIR = os.path.join("runs", "tracking-train")
# = handgrad.tracking.TRACKERS (a test checks), spelled out so that building the parser imports no tracker
TRACKERS = ("kcf", "kcf-hog", "search-cnn", "siamrpn")


def _box(text: str) -> tuple[float, float, float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected --box x,y,w,h (numbers), got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected --box x,y,w,h (4 numbers), got {text!r}")
    if vals[2] <= 0 or vals[3] <= 0:
        raise argparse.ArgumentTypeError(f"the box needs a positive width and height, got {text!r}")
    return vals  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``track`` on the ``handgrad`` subcommand parser."""
    p = sub.add_parser("track", help="track one object through a video or a folder of frames",
                       description=__doc__.split("\n\n")[1].replace("%", "%%"))
    p.add_argument("source", help="video file, GIF, folder of frames or OTB sequence folder")
    p.add_argument("--box", type=_box, required=True, metavar="x,y,w,h",
                   help="the object in the first frame (pixels, top-left corner and size)")
    p.add_argument("--tracker", choices=TRACKERS, default="kcf-hog", help="which tracker (default kcf-hog)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help=f"weights of search-cnn/siamrpn (default {DEFAULT_WEIGHTS_DIR}/NAME.safetensors)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/track-NAME)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="track at most N frames")
    p.add_argument("--gif-frames", type=int, default=100, metavar="N",
                   help="frames in the annotated GIF (evenly spaced; 0: no GIF; default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _annotate(frame: np.ndarray, box: tuple[float, ...], ok: bool, k: int, width: int = 320):
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    s = min(1.0, width / img.width)
    if s < 1.0:
        img = img.resize((int(img.width * s), int(img.height * s)), Image.BILINEAR)
    d = ImageDraw.Draw(img)
    x, y, w, h = (v * s for v in box)
    d.rectangle([x, y, x + w, y + h], outline=(40, 220, 40) if ok else (230, 40, 40), width=2)
    d.text((4, 4), f"{k}", fill=(255, 255, 0))
    return img


def run(opts: argparse.Namespace) -> int:
    """Track and write the CSV and GIF; user errors become :class:`ExperimentError` (one line, exit 2)."""
    from tqdm import tqdm

    from handgrad.data.otb import SequenceError, frame_source
    from handgrad.tracking import create_tracker

    if opts.max_frames is not None and opts.max_frames < 1:
        raise ExperimentError(f"--max-frames must be positive, got {opts.max_frames}")
    weights = opts.weights
    if opts.tracker in ("search-cnn", "siamrpn") and weights is None:
        weights = os.path.join(DEFAULT_WEIGHTS_DIR, opts.tracker.replace("-", "_") + ".safetensors")
        if not os.path.isfile(weights):
            raise ExperimentError(f"no trained weights for {opts.tracker} at {weights}: run "
                                  f"`handgrad run tracking-train` first or pass --weights FILE")
    if weights is not None and not os.path.isfile(weights):
        raise ExperimentError(f"no such weights file: {weights}")
    try:
        seq = frame_source(opts.source, opts.max_frames)
        if len(seq) == 0:
            raise SequenceError(f"no frames in {opts.source}")
        tracker = create_tracker(opts.tracker, weights)
        first = seq[0]
        tracker.init(first, opts.box)
    except (SequenceError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e
    out = opts.out or os.path.join("runs", f"track-{seq.name}")
    os.makedirs(out, exist_ok=True)
    n = len(seq)
    gif_every = max(1, int(np.ceil(n / opts.gif_frames))) if opts.gif_frames > 0 else 0
    rows = [(0, *opts.box, 1)]
    gif = [_annotate(first, opts.box, True, 0)] if gif_every else []
    quiet = opts.no_progress or not sys.stderr.isatty()
    elapsed = 0.0
    for k in tqdm(range(1, n), desc=f"tracking ({opts.tracker})", disable=quiet, unit="frame"):
        try:
            frame = seq[k]
        except (OSError, ValueError) as e:
            raise ExperimentError(f"frame {k} of {opts.source} is unreadable: {e}") from e
        t0 = time.perf_counter()
        ok, box = tracker.update(frame)
        elapsed += time.perf_counter() - t0
        rows.append((k, *box, int(ok)))
        if gif_every and k % gif_every == 0:
            gif.append(_annotate(frame, box, ok, k))
    csv_path = os.path.join(out, "boxes.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "x", "y", "w", "h", "ok"])
        for r in rows:
            w.writerow([r[0], *(f"{v:.2f}" for v in r[1:5]), r[5]])
    print(f"boxes: {csv_path} ({n} frames, {(n - 1) / elapsed if elapsed > 0 else float('inf'):.0f} fps)")
    if gif:
        gif_path = os.path.join(out, "tracked.gif")
        gif[0].save(gif_path, save_all=True, append_images=gif[1:], duration=int(40 * gif_every), loop=0)
        print(f"gif: {gif_path} ({len(gif)} frames)")
    return 0
