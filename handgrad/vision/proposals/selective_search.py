"""Selective search (Uijlings, van de Sande, Gevers & Smeulders, IJCV 2013): object proposals by
hierarchical grouping of a Felzenszwalb-Huttenlocher over-segmentation, from scratch.

One *strategy* = (colour space, segmentation threshold k, similarity). For each strategy:

1. Segment the image in that colour space (:func:`~handgrad.vision.segmentation.felzenszwalb`, sigma 0.8,
   ``min_size = k``) into initial regions; record for each region its size, box, a colour histogram (25
   bins per channel) and a texture histogram (Gaussian derivatives, sigma 1, in 8 orientations per channel,
   10 bins each), both L1-normalised, and which regions touch.
2. Repeatedly merge the two neighbouring regions of highest similarity
   ``s = s_colour + s_texture + s_size + s_fill`` (the terms the strategy uses), where
   ``s_colour = sum_k min(c_i^k, c_j^k)``, ``s_texture`` likewise, ``s_size = 1 - (|r_i| + |r_j|) / |im|``,
   ``s_fill = 1 - (|BB_ij| - |r_i| - |r_j|) / |im|``; the merged region's histograms are the size-weighted
   means, its neighbours the union. Every region ever formed is a proposal (its box).
3. Rank: a region's hierarchy position (1 = the last merge, the whole image) times a random number in
   [0, 1]; the proposals of all strategies are sorted by that value and duplicate boxes removed.

Modes as in the paper: ``"single"`` (HSV, k = 100, C+T+S+F), ``"fast"`` (HSV and Lab, k = 50 and 100,
C+T+S+F and T+S+F: 8 strategies) and ``"quality"`` (HSV, Lab, rgI, H, I; k = 50, 100, 150, 300; C+T+S+F,
T+S+F, F, S: 80 strategies). The grouping loop runs in numba; features are NumPy/SciPy.
"""

from __future__ import annotations

import numpy
from scipy import ndimage

from handgrad.vision.segmentation.felzenszwalb import _njit, felzenszwalb

__all__ = ["selective_search", "MODES", "color_space"]

# similarity flags: (colour, texture, size, fill)
_SIMS = {"CTSF": (1, 1, 1, 1), "TSF": (0, 1, 1, 1), "F": (0, 0, 0, 1), "S": (0, 0, 1, 0)}
MODES = {
    "single": (("hsv",), (100,), ("CTSF",)),
    "fast": (("hsv", "lab"), (50, 100), ("CTSF", "TSF")),
    "quality": (("hsv", "lab", "rgI", "H", "I"), (50, 100, 150, 300), ("CTSF", "TSF", "F", "S")),
}
_COLOUR_BINS, _TEXTURE_BINS, _ORIENTATIONS = 25, 10, 8


def _lab(rgb: numpy.ndarray) -> numpy.ndarray:
    """CIE L*a*b* (D65) of sRGB in [0, 1], scaled to 0..255 per channel (L * 255/100, a + 128, b + 128)."""
    lin = numpy.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = numpy.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                     [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / numpy.array([0.950456, 1.0, 1.088754])
    f = numpy.where(xyz > 0.008856, numpy.cbrt(xyz), 7.787 * xyz + 16.0 / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return numpy.stack([L * 255 / 100, a + 128, b + 128], -1)


def color_space(rgb: numpy.ndarray, name: str) -> numpy.ndarray:
    """The image in one of the paper's colour spaces, ``uint8 (H, W, C)``: ``rgb``, ``hsv``, ``lab``,
    ``rgI`` (normalised r, g and intensity), ``H`` (hue), ``I`` (intensity)."""
    from matplotlib.colors import rgb_to_hsv

    x = rgb.astype(numpy.float64) / 255.0
    if name == "rgb":
        out = x * 255
    elif name in ("hsv", "H"):
        out = rgb_to_hsv(x) * 255
        if name == "H":
            out = out[..., :1]
    elif name == "lab":
        out = _lab(x)
    elif name == "rgI":
        s = x.sum(-1, keepdims=True)
        rg = numpy.where(s > 0, x[..., :2] / numpy.where(s > 0, s, 1), 1 / 3)
        out = numpy.concatenate([rg * 255, s / 3 * 255], -1)
    elif name == "I":
        out = x.mean(-1, keepdims=True) * 255
    else:
        raise ValueError(f"selective_search: unknown colour space {name!r}")
    return numpy.clip(numpy.round(out), 0, 255).astype(numpy.uint8)


def _features(labels: numpy.ndarray, img: numpy.ndarray) -> tuple[numpy.ndarray, ...]:
    """Per region: size, box, colour and texture histograms (L1-normalised); neighbour pairs."""
    H, W, C = img.shape
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = numpy.bincount(flat, minlength=n).astype(numpy.float64)
    box = numpy.zeros((n, 4))
    for r, sl in enumerate(ndimage.find_objects(labels + 1)):  # bounding slices, one C pass
        if sl is not None:
            box[r] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    colour = []
    texture = []
    for c in range(C):
        ch = img[..., c].astype(numpy.float64)
        b = numpy.minimum((ch.ravel() * _COLOUR_BINS / 256).astype(numpy.int64), _COLOUR_BINS - 1)
        colour.append(numpy.bincount(flat * _COLOUR_BINS + b, minlength=n * _COLOUR_BINS).reshape(n, -1))
        gx = ndimage.gaussian_filter(ch, 1.0, order=(0, 1))
        gy = ndimage.gaussian_filter(ch, 1.0, order=(1, 0))
        for o in range(_ORIENTATIONS):
            t = numpy.pi * o / 4
            d = numpy.maximum(numpy.cos(t) * gx + numpy.sin(t) * gy, 0).ravel()
            mx = d.max()
            tb = numpy.minimum((d / mx * _TEXTURE_BINS).astype(numpy.int64), _TEXTURE_BINS - 1) if mx > 0 else \
                numpy.zeros(d.shape, dtype=numpy.int64)
            texture.append(numpy.bincount(flat * _TEXTURE_BINS + tb, minlength=n * _TEXTURE_BINS).reshape(n, -1))
    colour_h = numpy.concatenate(colour, 1).astype(numpy.float64)
    texture_h = numpy.concatenate(texture, 1).astype(numpy.float64)
    colour_h /= colour_h.sum(1, keepdims=True)
    texture_h /= texture_h.sum(1, keepdims=True)
    a = numpy.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    b = numpy.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    diff = a != b
    pairs = numpy.stack([numpy.minimum(a[diff], b[diff]), numpy.maximum(a[diff], b[diff])], 1)
    pairs = numpy.unique(pairs, axis=0) if len(pairs) else numpy.zeros((0, 2), dtype=numpy.int64)
    return size, box, colour_h, texture_h, pairs.astype(numpy.int64)


@_njit
def _similarity(i: int, j: int, size: numpy.ndarray, box: numpy.ndarray, colour: numpy.ndarray,
                texture: numpy.ndarray, im_size: float, use: numpy.ndarray) -> float:  # pragma: no cover
    s = 0.0
    if use[0]:
        acc = 0.0
        for k in range(colour.shape[1]):
            acc += min(colour[i, k], colour[j, k])
        s += acc
    if use[1]:
        acc = 0.0
        for k in range(texture.shape[1]):
            acc += min(texture[i, k], texture[j, k])
        s += acc
    if use[2]:
        s += 1.0 - (size[i] + size[j]) / im_size
    if use[3]:
        bw = max(box[i, 2], box[j, 2]) - min(box[i, 0], box[j, 0])
        bh = max(box[i, 3], box[j, 3]) - min(box[i, 1], box[j, 1])
        s += 1.0 - (bw * bh - size[i] - size[j]) / im_size
    return s


@_njit
def _group(size0: numpy.ndarray, box0: numpy.ndarray, colour0: numpy.ndarray, texture0: numpy.ndarray,
           pairs0: numpy.ndarray, im_size: float, use: numpy.ndarray) -> numpy.ndarray:  # pragma: no cover
    """Boxes of all regions in creation order: the n initial ones, then one per merge."""
    n = size0.shape[0]
    cap = 2 * n
    size = numpy.zeros(cap)
    box = numpy.zeros((cap, 4))
    colour = numpy.zeros((cap, colour0.shape[1]))
    texture = numpy.zeros((cap, texture0.shape[1]))
    size[:n] = size0
    box[:n] = box0
    colour[:n] = colour0
    texture[:n] = texture0
    pcap = max(16, 8 * pairs0.shape[0] + 4 * n)
    pa = numpy.empty(pcap, dtype=numpy.int64)
    pb = numpy.empty(pcap, dtype=numpy.int64)
    ps = numpy.empty(pcap)
    alive = numpy.zeros(pcap, dtype=numpy.bool_)
    npairs = pairs0.shape[0]
    for e in range(npairs):
        pa[e], pb[e] = pairs0[e, 0], pairs0[e, 1]
        ps[e] = _similarity(pa[e], pb[e], size, box, colour, texture, im_size, use)
        alive[e] = True
    mark = numpy.full(cap, -1, dtype=numpy.int64)
    nreg = n
    while True:
        best = -1
        bs = -1e300
        for e in range(npairs):
            if alive[e] and ps[e] > bs:
                bs = ps[e]
                best = e
        if best < 0:
            break
        i, j = pa[best], pb[best]
        m = nreg
        nreg += 1
        size[m] = size[i] + size[j]
        box[m, 0] = min(box[i, 0], box[j, 0])
        box[m, 1] = min(box[i, 1], box[j, 1])
        box[m, 2] = max(box[i, 2], box[j, 2])
        box[m, 3] = max(box[i, 3], box[j, 3])
        colour[m] = (size[i] * colour[i] + size[j] * colour[j]) / size[m]
        texture[m] = (size[i] * texture[i] + size[j] * texture[j]) / size[m]
        mark[i] = m
        mark[j] = m
        mark[m] = m
        end = npairs
        for e in range(end):
            if not alive[e]:
                continue
            a, b = pa[e], pb[e]
            if a == i or a == j or b == i or b == j:
                alive[e] = False
                nb = b if (a == i or a == j) else a
                if mark[nb] != m:  # a new neighbour of m
                    mark[nb] = m
                    if npairs >= pcap:  # grow the pair arrays
                        pcap *= 2
                        pa2 = numpy.empty(pcap, dtype=numpy.int64)
                        pb2 = numpy.empty(pcap, dtype=numpy.int64)
                        ps2 = numpy.empty(pcap)
                        al2 = numpy.zeros(pcap, dtype=numpy.bool_)
                        pa2[:npairs] = pa[:npairs]
                        pb2[:npairs] = pb[:npairs]
                        ps2[:npairs] = ps[:npairs]
                        al2[:npairs] = alive[:npairs]
                        pa, pb, ps, alive = pa2, pb2, ps2, al2
                    pa[npairs] = nb
                    pb[npairs] = m
                    ps[npairs] = _similarity(nb, m, size, box, colour, texture, im_size, use)
                    alive[npairs] = True
                    npairs += 1
    return box[:nreg].copy()


def selective_search(image: numpy.ndarray, mode: str = "fast", seed: int = 0,
                     max_proposals: int | None = None, sigma: float = 0.8) -> numpy.ndarray:
    """Ranked object proposals ``float64 (M, 4)`` ``[x1, y1, x2, y2]`` (continuous coordinates, best first)
    for an RGB ``uint8 (H, W, 3)`` image. ``seed`` fixes the random factor of the ranking."""
    img = numpy.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != numpy.uint8:
        raise ValueError(f"selective_search: expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    if mode not in MODES:
        raise ValueError(f"selective_search: mode must be one of {tuple(MODES)}, got {mode!r}")
    spaces, ks, sims = MODES[mode]
    rng = numpy.random.default_rng(seed)
    H, W = img.shape[:2]
    all_boxes, all_prio = [], []
    for space in spaces:
        cimg = color_space(img, space)
        for k in ks:
            labels = felzenszwalb(cimg, scale=k, sigma=sigma, min_size=k)
            size, box, colour, texture, pairs = _features(labels, cimg)
            for sim in sims:
                use = numpy.array(_SIMS[sim], dtype=numpy.int64)
                boxes = _group(size, box, colour, texture, pairs, float(H * W), use)
                pos = numpy.arange(len(boxes), 0, -1, dtype=numpy.float64)  # 1 = the last region formed
                all_boxes.append(boxes)
                all_prio.append(pos * rng.random(len(boxes)))
    boxes = numpy.concatenate(all_boxes)
    order = numpy.argsort(numpy.concatenate(all_prio), kind="stable")
    boxes = boxes[order]
    _, first = numpy.unique(boxes, axis=0, return_index=True)
    boxes = boxes[numpy.sort(first)]
    return boxes if max_proposals is None else boxes[:max_proposals]
