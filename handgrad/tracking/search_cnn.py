"""Tracking as search with a CNN (the course deck's description; Held, Thrun & Savarese's GOTURN, 2016).

Each frame, the region around the previous box (``context`` times its width and height, centred on it)
is cropped from the previous frame (the *template*: the object, centred) and from the current frame (the
*search region*: where the object has moved to); both are resized to ``crop x crop`` pixels, go through
the same convolutional layers (shared weights), and fully connected layers regress the object's box in
the search crop from the two feature vectors::

    f(.) = conv5x5/2 - ReLU - conv3x3 - ReLU - maxpool2 - conv3x3 - ReLU        (shared)
    box  = FC(hidden) - ReLU - FC(4) applied to [f(template), f(search)]      (x1, y1, x2, y2) / crop

Sizes for CPU training (the defaults): 48 px crops, 16/32/32 channels, 256 hidden units, 1.06 M weights
(almost all in the first FC layer); a training step of 32 pairs takes about a quarter of a second on one core,
so a few thousand steps fit in minutes. Training pairs (:func:`make_example`) come from consecutive frames of
generated sequences and from single frames with synthetic motion: the search crop's centre is moved by a
Laplace-distributed offset and its size scaled, as GOTURN does; the loss is the L1 distance of the normalised
corners. No online update: the tracker only looks at the previous box, the previous frame and the current
frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import handgrad as hg
from handgrad import nn
from handgrad.engine.grad_mode import no_grad
from handgrad.tracking._image import check_box, check_frame, subwindow

__all__ = ["SearchCNN", "SearchCNNNet", "make_example", "search_cnn_loss"]


def _features(crop: int, widths: Sequence[int]) -> tuple[nn.Module, int]:
    c1, c2, c3 = widths
    net = nn.Sequential(nn.Conv2d(3, c1, 5, stride=2), nn.ReLU(), nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(c2, c3, 3), nn.ReLU())
    s = ((crop - 5) // 2 + 1 - 2) // 2 - 2
    return net, c3 * s * s


class SearchCNNNet(nn.Module):
    """``forward(template, search) -> (B, 4)``: the box ``(x1, y1, x2, y2)`` in the search crop, as fractions
    of its side. Inputs ``(B, 3, crop, crop)`` float32, pixels scaled to ``[-0.5, 0.5]``."""

    def __init__(self, crop: int = 48, widths: Sequence[int] = (16, 32, 32), hidden: int = 256) -> None:
        super().__init__()
        self.features, n = _features(crop, widths)
        self.head = nn.Sequential(nn.Linear(2 * n, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, template: Any, search: Any) -> Any:
        a = self.features(template)
        b = self.features(search)
        f = hg.cat([a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)], dim=1)
        return self.head(f)


def search_cnn_loss(output: Any, target: Any) -> Any:
    """Mean L1 distance between predicted and true normalised corners."""
    return (output - target).abs().mean()


def _crop(frame: np.ndarray, center: tuple[float, float], size: tuple[float, float], crop: int) -> np.ndarray:
    patch = subwindow(frame, center, size, (crop, crop))
    return (patch.transpose(2, 0, 1) / 255.0 - 0.5).astype(np.float32)


def make_example(frame_a: np.ndarray, box_a: Sequence[float], frame_b: np.ndarray, box_b: Sequence[float],
                 rng: np.random.Generator, crop: int = 48, context: float = 2.0, shift: float = 0.2,
                 scale: float = 1 / 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training triple ``(template, search, target)`` from the object's boxes ``(x, y, w, h)`` in two
    frames (the same frame twice for a still image): the search crop sits at ``box_a``'s centre moved by
    ``Laplace(0, shift) * (w, h)`` (clipped to +-0.5) with its size scaled by ``exp(Laplace(0, scale))``
    (clipped to +-0.4), so the target box inside it has moved and changed size."""
    xa, ya, wa, ha = box_a
    ca = (xa + wa / 2, ya + ha / 2)
    z = _crop(frame_a, ca, (context * wa, context * ha), crop)
    dx, dy = np.clip(rng.laplace(0, shift, 2), -0.5, 0.5)
    s = math.exp(float(np.clip(rng.laplace(0, scale), -0.4, 0.4)))
    cx, cy = ca[0] + dx * wa, ca[1] + dy * ha
    sw, sh = context * wa * s, context * ha * s
    x = _crop(frame_b, (cx, cy), (sw, sh), crop)
    xb, yb, wb, hb = box_b
    t = np.array([(xb - (cx - sw / 2)) / sw, (yb - (cy - sh / 2)) / sh, (xb + wb - (cx - sw / 2)) / sw,
                  (yb + hb - (cy - sh / 2)) / sh], dtype=np.float32)
    return z, x, t


class SearchCNN:
    """The tracker (OpenCV's protocol) around a trained :class:`SearchCNNNet`.

    ``SearchCNN.load(path)`` reads weights saved by :meth:`save` (``handgrad run tracking-train``).
    ``max_scale_change`` bounds the size change per frame (a regression gone wild cannot blow up the box).
    """

    def __init__(self, net: SearchCNNNet | None = None, crop: int = 48, context: float = 2.0,
                 widths: Sequence[int] = (16, 32, 32), hidden: int = 256, max_scale_change: float = 1.15) -> None:
        self.config = {"crop": int(crop), "context": float(context), "widths": list(widths), "hidden": int(hidden)}
        self.net = net if net is not None else SearchCNNNet(crop, widths, hidden)
        self.crop, self.context = int(crop), float(context)
        self.max_scale_change = float(max_scale_change)

    def save(self, path: str) -> None:
        hg.save({"kind": "search-cnn", "config": self.config, "state_dict": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str) -> SearchCNN:
        obj = hg.load(path)
        if not isinstance(obj, dict) or obj.get("kind") != "search-cnn":
            raise ValueError(f"SearchCNN.load: {path} holds no search-cnn weights")
        c = obj["config"]
        t = cls(None, c["crop"], c["context"], c["widths"], c["hidden"])
        t.net.load_state_dict(obj["state_dict"])
        return t

    def init(self, frame: np.ndarray, box: Sequence[float]) -> bool:
        frame = check_frame(frame, "SearchCNN.init")
        self._box = check_box(box, frame.shape, "SearchCNN.init")
        self._prev = frame
        self.net.eval()
        return True

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, float, float, float]]:
        if not hasattr(self, "_box"):
            raise RuntimeError("SearchCNN.update: call init(frame, box) first")
        frame = check_frame(frame, "SearchCNN.update")
        x, y, w, h = self._box
        c = (x + w / 2, y + h / 2)
        size = (self.context * w, self.context * h)
        z = _crop(self._prev, c, size, self.crop)[None]
        s = _crop(frame, c, size, self.crop)[None]
        with no_grad():
            out = self.net(hg.tensor(z), hg.tensor(s)).numpy()[0].astype(np.float64)
        x0, y0 = c[0] - size[0] / 2, c[1] - size[1] / 2
        x1, y1, x2, y2 = x0 + out[0] * size[0], y0 + out[1] * size[1], x0 + out[2] * size[0], y0 + out[3] * size[1]
        m = self.max_scale_change
        nw = min(max(x2 - x1, w / m), w * m)
        nh = min(max(y2 - y1, h / m), h * m)
        H, W = frame.shape[:2]
        cx = min(max((x1 + x2) / 2, 0.0), W)
        cy = min(max((y1 + y2) / 2, 0.0), H)
        nw, nh = max(nw, 4.0), max(nh, 4.0)
        self._box = (float(cx - nw / 2), float(cy - nh / 2), float(nw), float(nh))
        self._prev = frame
        return True, self._box
