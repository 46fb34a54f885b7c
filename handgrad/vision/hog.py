"""Felzenszwalb's 31-channel HOG (Felzenszwalb, Girshick, McAllester & Ramanan, PAMI 2010), the feature of
KCF with HOG (Henriques et al. 2015).

Per pixel, the gradient ``(dx, dy)`` by central differences of the colour channel with the largest
magnitude ``v = sqrt(dx^2 + dy^2)``; its direction snapped to the nearest of 18 signed orientations
``o`` (``argmax_o |<(cos 20o, sin 20o), (dx, dy)>|``, the sign picking ``o`` or ``o + 9``); ``v`` added to
the 18-bin histograms ``H[cell]`` of the four cells around the pixel with bilinear weights (cells of
``cell_size`` pixels, ``round(H / cell_size) x round(W / cell_size)`` of them). With the cell energy
``E = sum_{o<9} (H_o + H_{o+9})^2`` and the four 2x2 blocks ``b`` that contain a cell,
``N_b = 1 / sqrt(sum_{cells in b} E + 1e-4)``, the 31 features of a cell are

* 18 contrast-sensitive: ``0.5 * sum_b min(H_o N_b, 0.2)``,
* 9 contrast-insensitive: ``0.5 * sum_b min((H_o + H_{o+9}) N_b, 0.2)``,
* 4 texture (one per block): ``0.2357 * sum_{o<18} min(H_o N_b, 0.2)``,

exactly as the authors' ``features.cc`` (whose 32nd, all-zero truncation channel is left out). That code
drops the border cells (output ``blocks - 2``); ``pad=True`` keeps them by replicating the border cells'
histograms first, so the map covers the whole image, as trackers need.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["hog_felzenszwalb", "HOG_CHANNELS"]

HOG_CHANNELS = 31
_EPS = 1e-4


@njit(cache=True)
def _histograms(img: np.ndarray, sbin: int) -> np.ndarray:  # pragma: no cover - compiled
    h, w, nc = img.shape
    bh = int(math.floor(h / sbin + 0.5))
    bw = int(math.floor(w / sbin + 0.5))
    hist = np.zeros((bh, bw, 18))
    uu = np.empty(9)
    vv = np.empty(9)
    for o in range(9):
        uu[o] = math.cos(o * math.pi / 9.0)
        vv[o] = math.sin(o * math.pi / 9.0)
    vis_h = bh * sbin
    vis_w = bw * sbin
    for y in range(1, vis_h - 1):
        sy = min(y, h - 2)
        yp = (y + 0.5) / sbin - 0.5
        iyp = int(math.floor(yp))
        vy0 = yp - iyp
        vy1 = 1.0 - vy0
        for x in range(1, vis_w - 1):
            sx = min(x, w - 2)
            best_v = -1.0
            dx = 0.0
            dy = 0.0
            for c in range(nc):  # the channel with the strongest gradient
                gx = img[sy, sx + 1, c] - img[sy, sx - 1, c]
                gy = img[sy + 1, sx, c] - img[sy - 1, sx, c]
                v = gx * gx + gy * gy
                if v > best_v:
                    best_v = v
                    dx = gx
                    dy = gy
            best_dot = 0.0
            best_o = 0
            for o in range(9):
                dot = uu[o] * dx + vv[o] * dy
                if dot > best_dot:
                    best_dot = dot
                    best_o = o
                elif -dot > best_dot:
                    best_dot = -dot
                    best_o = o + 9
            xp = (x + 0.5) / sbin - 0.5
            ixp = int(math.floor(xp))
            vx0 = xp - ixp
            vx1 = 1.0 - vx0
            v = math.sqrt(best_v)
            if ixp >= 0 and iyp >= 0:
                hist[iyp, ixp, best_o] += vx1 * vy1 * v
            if ixp + 1 < bw and iyp >= 0:
                hist[iyp, ixp + 1, best_o] += vx0 * vy1 * v
            if ixp >= 0 and iyp + 1 < bh:
                hist[iyp + 1, ixp, best_o] += vx1 * vy0 * v
            if ixp + 1 < bw and iyp + 1 < bh:
                hist[iyp + 1, ixp + 1, best_o] += vx0 * vy0 * v
    return hist


@njit(cache=True)
def _normalise(hist: np.ndarray, pad: bool, out: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    # With pad, the histogram grid is read as if one replicated border cell surrounded it (index clamping
    # instead of a padded copy), and every cell gets a feature vector; without, the border cells are dropped.
    bh, bw, _ = hist.shape
    p = 1 if pad else 0
    oh = bh if pad else max(bh - 2, 0)
    ow = bw if pad else max(bw - 2, 0)
    norm = np.zeros((bh, bw))
    for i in range(bh):
        for j in range(bw):
            s = 0.0
            for o in range(9):
                t = hist[i, j, o] + hist[i, j, o + 9]
                s += t * t
            norm[i, j] = s
    ri = np.empty(bh + 2 * p, np.int64)
    for i in range(bh + 2 * p):
        ri[i] = min(max(i - p, 0), bh - 1)
    ci = np.empty(bw + 2 * p, np.int64)
    for j in range(bw + 2 * p):
        ci[j] = min(max(j - p, 0), bw - 1)
    ns = np.empty(4)
    t = np.empty(4)
    for y in range(oh):
        for x in range(ow):
            # the cell (cy, cx) of the (virtually padded) grid and its neighbours' energies
            y0, y1, y2 = ri[y], ri[y + 1], ri[y + 2]
            x0, x1, x2 = ci[x], ci[x + 1], ci[x + 2]
            # the four 2x2 blocks that contain the cell
            ns[0] = 1.0 / math.sqrt(norm[y1, x1] + norm[y2, x1] + norm[y1, x2] + norm[y2, x2] + _EPS)
            ns[1] = 1.0 / math.sqrt(norm[y0, x1] + norm[y1, x1] + norm[y0, x2] + norm[y1, x2] + _EPS)
            ns[2] = 1.0 / math.sqrt(norm[y1, x0] + norm[y2, x0] + norm[y1, x1] + norm[y2, x1] + _EPS)
            ns[3] = 1.0 / math.sqrt(norm[y0, x0] + norm[y1, x0] + norm[y0, x1] + norm[y1, x1] + _EPS)
            for k in range(4):
                t[k] = 0.0
            for o in range(18):
                acc = 0.0
                for k in range(4):
                    hk = min(hist[y1, x1, o] * ns[k], 0.2)
                    acc += hk
                    t[k] += hk
                out[y, x, o] = 0.5 * acc
            for o in range(9):
                s = hist[y1, x1, o] + hist[y1, x1, o + 9]
                acc = 0.0
                for k in range(4):
                    acc += min(s * ns[k], 0.2)
                out[y, x, 18 + o] = 0.5 * acc
            for k in range(4):
                out[y, x, 27 + k] = 0.2357 * t[k]
    return out


def hog_felzenszwalb(image: np.ndarray, cell_size: int = 4, pad: bool = True, dtype: type = np.float64) -> np.ndarray:
    """The 31-channel Felzenszwalb HOG map of ``image``.

    Args:
        image: ``(H, W)`` grey or ``(H, W, C)`` colour image, any real dtype (uint8 is used as 0..255).
        cell_size: pixels per cell side (``sbin``).
        pad: ``True``: one feature vector per cell, ``round(H / cell_size) x round(W / cell_size)``;
            ``False``: the original code's map without the border cells (two fewer in each direction).
        dtype: of the result (``float32`` for trackers; the computation is float64 either way).

    Returns:
        ``(h, w, 31)`` array: 18 signed orientations, 9 unsigned, 4 texture energies.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] < 1:
        raise ValueError(f"hog_felzenszwalb: expected an (H, W) or (H, W, C) image, got shape {np.shape(image)}")
    if int(cell_size) != cell_size or cell_size < 1:
        raise ValueError(f"hog_felzenszwalb: cell_size must be a positive integer, got {cell_size!r}")
    if img.shape[0] < 3 or img.shape[1] < 3:
        raise ValueError(f"hog_felzenszwalb: the image must be at least 3x3 pixels, got shape {img.shape}")
    if img.dtype not in (np.float32, np.float64):  # integers would wrap around in the differences
        img = img.astype(np.float64)
    hist = _histograms(np.ascontiguousarray(img), int(cell_size))
    bh, bw = hist.shape[:2]
    shape = (bh, bw, HOG_CHANNELS) if pad else (max(bh - 2, 0), max(bw - 2, 0), HOG_CHANNELS)
    return _normalise(hist, bool(pad), np.empty(shape, dtype=dtype))
