"""KCF: the kernelized correlation filter tracker (Henriques, Caseiro, Martins & Batista, PAMI 2015).

Tracking reformulated as image search: a ridge regression is trained on *every* cyclic shift of the
feature patch ``x`` (``h x w x C``) around the target, to answer a Gaussian ``y`` (1 for the centred patch,
decaying with the shift). The shifts make the kernel matrix ``K_ij = kappa(P^i x, P^j x)`` circulant, so
the dual ridge regression ``alpha = (K + lambda I)^-1 y`` is diagonalised by the 2-D DFT::

    alpha_hat = y_hat / (k_hat^{xx} + lambda)           (training, element-wise)
    response  = F^-1(k_hat^{xz} . alpha_hat)            (detection: the score of every shift of z)

with the kernel correlation ``k^{xz}_d = kappa(x, P^d z)`` for all shifts ``d`` at once, from the
channel-summed cross-correlation ``c = F^-1(sum_c conj(x_hat_c) . z_hat_c)`` (``n = h w C``):

* linear (the DCF variant): ``k = c / n``;
* polynomial: ``k = (c / n + a)^b``;
* Gaussian: ``k = exp(-(||x||^2 + ||z||^2 - 2 c) / (sigma^2 n))``.

The tracker adds the paper's cosine window over the features, padding (the patch is ``1 + padding``
times the target), model interpolation (``x_hat`` and ``alpha_hat`` are running averages with rate
``interp_factor``), a sub-pixel peak (a parabola through the peak and its neighbours in each axis) and a
scale search (the patch at ``scale_step^k`` times the current size; the best peak wins, non-unit scales
weighted by ``scale_weight``). Features: grey pixels (``features="gray"``, one cell per pixel) or the
31-channel Felzenszwalb HOG (``features="hog"``, 4-pixel cells, :mod:`handgrad.vision.hog`).

OpenCV's protocol: ``tracker = KCF(); tracker.init(frame, (x, y, w, h)); ok, box = tracker.update(frame)``
with ``H x W x 3`` uint8 frames. ``ok`` is ``False`` when the peak response falls below ``detect_thresh``
(the model is then not updated, so an occluder is not learnt).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import fft

from handgrad.tracking._image import check_box, check_frame, subwindow
from handgrad.vision.hog import hog_felzenszwalb

__all__ = ["KCF", "kernel_correlation", "gaussian_labels", "train_filter", "detect", "subpixel_peak"]

_KERNELS = ("gaussian", "polynomial", "linear")
_FEATURES = ("gray", "hog")

# The paper's settings (Table/Section 6 of Henriques et al. 2015 and their MATLAB code).
# Grey pixels' peak hardly changes with scale, so their scale search drifts (measured on a pure pan: the
# scale grew 34% in 80 frames): off by default, as in the paper.
_DEFAULTS = {
    "gray": dict(cell_size=1, interp_factor=0.075, sigma=0.2, output_sigma_factor=0.1, degree=7, num_scales=1),
    "hog": dict(cell_size=4, interp_factor=0.02, sigma=0.5, output_sigma_factor=0.1, degree=9, num_scales=3),
}


def _rfft2(x: np.ndarray) -> np.ndarray:
    return fft.rfft2(x, axes=(0, 1), workers=1)


def _energy(x: np.ndarray) -> float:
    r = x.ravel()
    return float(np.sum(r * r))  # not BLAS (np.dot/vdot): its threads stall on a busy machine


def kernel_correlation(xf: np.ndarray, zf: np.ndarray, shape: tuple[int, ...], kernel: str = "gaussian", *,
                       xx: float | None = None, zz: float | None = None, sigma: float = 0.5,
                       degree: float = 9, offset: float = 1.0) -> np.ndarray:
    """``k_hat^{xz}``: the DFT of ``k_d = kappa(x, z[. + d])`` over all cyclic shifts ``d`` of ``z``.

    Args:
        xf, zf: ``rfft2`` over axes (0, 1) of real feature maps of shape ``shape = (h, w, C)``
            (``(h, w // 2 + 1, C)`` complex).
        kernel: ``"gaussian"`` (needs ``xx = ||x||^2``, ``zz = ||z||^2`` and ``sigma``), ``"polynomial"``
            (``(c / n + offset)^degree``) or ``"linear"`` (``c / n``), with ``n = h w C``.

    Returns:
        ``(h, w // 2 + 1)`` complex: the half spectrum of the ``(h, w)`` kernel correlation.
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel_correlation: kernel must be one of {_KERNELS}, got {kernel!r}")
    if xf.shape != zf.shape or len(shape) != 3:
        raise ValueError(f"kernel_correlation: spectra of equal shape needed, got {xf.shape} and {zf.shape}")
    h, w, c = shape
    n = h * w * c
    cross = fft.irfft2(np.sum(np.conj(xf) * zf, axis=2), s=(h, w), workers=1)  # <x, P^d z> for every d
    if kernel == "linear":
        k = cross / n
    elif kernel == "polynomial":
        k = (cross / n + offset) ** degree
    else:
        if xx is None or zz is None:
            raise ValueError("kernel_correlation: the Gaussian kernel needs xx and zz (the squared norms)")
        k = np.exp(-np.maximum(xx + zz - 2.0 * cross, 0.0) / (sigma * sigma * n))
    return fft.rfft2(k, workers=1)


def gaussian_labels(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """``(h, w)`` regression targets ``y_d = exp(-|d|^2 / (2 sigma^2))`` for the shift ``d``, with the
    circular distance (``d`` and ``-d`` get the same label), so the peak ``1`` sits at index (0, 0)."""
    h, w = shape
    dy = np.fft.fftfreq(h, 1.0 / h)  # 0, 1, ..., -2, -1
    dx = np.fft.fftfreq(w, 1.0 / w)
    return np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2.0 * sigma * sigma))


def train_filter(x: np.ndarray, yf: np.ndarray, kernel: str, lam: float, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression over all cyclic shifts of ``x`` (``(h, w, C)``): returns ``(x_hat, alpha_hat)`` with
    ``alpha_hat = y_hat / (k_hat^{xx} + lam)``; ``yf`` is ``rfft2(y)``."""
    xf = _rfft2(x)
    xx = _energy(x)
    kf = kernel_correlation(xf, xf, x.shape, kernel, xx=xx, zz=xx, **kw)
    return xf, yf / (kf + lam)


def detect(xf: np.ndarray, alphaf: np.ndarray, xx: float, z: np.ndarray, kernel: str, **kw: float) -> np.ndarray:
    """``(h, w)`` responses ``r_d = sum_i alpha_i kappa(P^i x, z shifted back by d)``, i.e.
    ``F^-1(k_hat^{xz} . conj(alpha_hat))``: the regression's score for every cyclic shift of the patch ``z``;
    the peak's index ``d`` is the displacement of the target."""
    zf = _rfft2(z)
    zz = _energy(z)
    kzf = kernel_correlation(xf, zf, z.shape, kernel, xx=xx, zz=zz, **kw)
    # conj(alpha_hat) makes this exact for any labels (the regression's sample i is x shifted by +i); the
    # tracker's labels are symmetric, so alpha is too and alpha_hat is real: the paper's k_hat . alpha_hat.
    return fft.irfft2(np.conj(alphaf) * kzf, s=z.shape[:2], workers=1)


def subpixel_peak(response: np.ndarray) -> tuple[float, float, float]:
    """``(dy, dx, peak)``: the arg-max of ``response`` refined by a parabola through it and its two
    (cyclic) neighbours in each axis, wrapped to the signed shift in ``[-h/2, h/2)``."""
    h, w = response.shape
    i, j = np.unravel_index(int(np.argmax(response)), response.shape)
    peak = float(response[i, j])

    def refine(left: float, right: float) -> float:
        den = 2.0 * peak - left - right
        return 0.5 * (right - left) / den if den > 1e-12 else 0.0

    fi = i + (refine(response[(i - 1) % h, j], response[(i + 1) % h, j]) if h > 2 else 0.0)
    fj = j + (refine(response[i, (j - 1) % w], response[i, (j + 1) % w]) if w > 2 else 0.0)
    fi = fi - h if fi >= h / 2 else fi
    fj = fj - w if fj >= w / 2 else fj
    return fi, fj, peak


class KCF:
    """The KCF tracker; see the module docstring for the equations.

    Args:
        features: ``"hog"`` (31-channel Felzenszwalb HOG, 4-pixel cells) or ``"gray"`` (raw pixels).
        kernel: ``"gaussian"``, ``"polynomial"`` or ``"linear"`` (the DCF variant).
        padding: the search window is ``(1 + padding)`` times the target.
        lambda_: ridge regularisation ``lambda``.
        sigma: Gaussian kernel bandwidth; ``degree``, ``offset``: polynomial kernel ``(c/n + offset)^degree``.
        interp_factor: model interpolation rate. ``output_sigma_factor``: label bandwidth as a fraction of
            ``sqrt(w h)`` of the target. ``cell_size``: feature cell in template pixels.
        template_size: the window is resampled so that its longer side is about this many pixels.
        num_scales, scale_step, scale_weight: scale search over ``scale_step^k``, ``|k| <= num_scales // 2``
            (default 3 with HOG, 1 with grey pixels).
        subpixel: refine the peak to sub-cell precision. ``detect_thresh``: minimum peak for ``ok``.
        upsample: ``False`` keeps windows smaller than ``template_size`` at their own resolution (the paper's
            code never enlarges them; faster on small targets).
    """

    def __init__(self, features: str = "hog", kernel: str = "gaussian", *, padding: float = 1.5,
                 lambda_: float = 1e-4, sigma: float | None = None, degree: float | None = None, offset: float = 1.0,
                 interp_factor: float | None = None, output_sigma_factor: float | None = None,
                 cell_size: int | None = None, template_size: int = 96, num_scales: int | None = None,
                 scale_step: float = 1.05, scale_weight: float = 0.95, subpixel: bool = True,
                 detect_thresh: float = 0.0, upsample: bool = True) -> None:
        if features not in _FEATURES:
            raise ValueError(f"KCF: features must be one of {_FEATURES}, got {features!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"KCF: kernel must be one of {_KERNELS}, got {kernel!r}")
        d = _DEFAULTS[features]
        num_scales = int(num_scales if num_scales is not None else d["num_scales"])
        if num_scales < 1 or scale_step < 1.0 or padding < 0 or lambda_ <= 0 or template_size < 8:
            raise ValueError(f"KCF: need num_scales >= 1, scale_step >= 1, padding >= 0, lambda_ > 0 and "
                             f"template_size >= 8; got {num_scales}, {scale_step}, {padding}, {lambda_}, "
                             f"{template_size}")
        self.features, self.kernel = features, kernel
        self.padding, self.lambda_ = float(padding), float(lambda_)
        self.sigma = float(sigma if sigma is not None else d["sigma"])
        self.degree = float(degree if degree is not None else d["degree"])
        self.offset = float(offset)
        self.interp_factor = float(interp_factor if interp_factor is not None else d["interp_factor"])
        self.output_sigma_factor = float(output_sigma_factor if output_sigma_factor is not None
                                         else d["output_sigma_factor"])
        self.cell_size = int(cell_size if cell_size is not None else d["cell_size"])
        self.template_size = int(template_size)
        half = num_scales // 2
        self.scales = [1.0] + [scale_step ** k for k in range(-half, half + 1) if k != 0]
        self.scale_weight = float(scale_weight)
        self.subpixel = bool(subpixel)
        self.detect_thresh = float(detect_thresh)
        self.upsample = bool(upsample)
        self.last_peak = float("nan")

    # -- features ----------------------------------------------------------------------------------------
    def _kw(self) -> dict[str, float]:
        return {"sigma": self.sigma, "degree": self.degree, "offset": self.offset}

    def _features(self, frame: np.ndarray, center: tuple[float, float], scale: float) -> np.ndarray:
        size = (self._window[0] * scale, self._window[1] * scale)
        patch = subwindow(frame, center, size, self._tmpl)
        if self.features == "gray":
            x = patch.mean(axis=2, dtype=np.float64) / 255.0
            x = (x - x.mean())[:, :, None]
        else:
            x = hog_felzenszwalb(patch, self.cell_size, pad=True)
        # float64 on purpose: with lambda = 1e-4 the division y_hat / (k_hat + lambda) amplifies float32
        # round-off at the weak high frequencies; measured on 8 benchmark sequences, float32 features cost
        # 0.10 precision@20 (0.535 vs 0.638) for +28% fps.
        return x * self._cos[:, :, None]

    # -- OpenCV protocol -------------------------------------------------------------------------------
    def init(self, frame: np.ndarray, box: Sequence[float]) -> bool:
        """Start tracking the target ``box = (x, y, w, h)`` (pixels, top-left corner) in ``frame``."""
        frame = check_frame(frame, "KCF.init")
        x, y, w, h = check_box(box, frame.shape, "KCF.init")
        self._center = (x + w / 2.0, y + h / 2.0)
        self._target = (w, h)
        self._scale = 1.0
        pw, ph = w * (1.0 + self.padding), h * (1.0 + self.padding)
        # The window is resampled to ~template_size pixels (speed; the paper's code halves large targets),
        # rounded to an even number of cells so that the zero shift is a cell.
        base = max(pw, ph) / self.template_size
        if not self.upsample:  # small targets keep their own resolution (as the paper's code): cheaper
            base = max(base, 1.0)
        step = 2 * self.cell_size
        tw = max(step * 2, int(round(pw / base / step)) * step)
        th = max(step * 2, int(round(ph / base / step)) * step)
        self._tmpl = (tw, th)
        self._window = (tw * base, th * base)  # image pixels covered by the template at scale 1
        self._px_per_cell = base * self.cell_size
        fh, fw = th // self.cell_size, tw // self.cell_size
        self._cos = np.outer(np.hanning(fh), np.hanning(fw))
        out_sigma = math.sqrt(w * h) / base * self.output_sigma_factor / self.cell_size
        self._yf = _rfft2(gaussian_labels((fh, fw), out_sigma)[:, :, None])[:, :, 0]
        self._min_scale = max(4.0 / min(w, h), 0.05)
        self._max_scale = max(min(frame.shape[1] / w, frame.shape[0] / h), 1.0)
        xfeat = self._features(frame, self._center, 1.0)
        self._xf, self._alphaf = train_filter(xfeat, self._yf, self.kernel, self.lambda_, **self._kw())
        self._xx = _energy(xfeat)
        self._initialised = True
        return True

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, float, float, float]]:
        """Locate the target in the next ``frame``; returns ``(ok, (x, y, w, h))``."""
        if not getattr(self, "_initialised", False):
            raise RuntimeError("KCF.update: call init(frame, box) first")
        frame = check_frame(frame, "KCF.update")
        best = None
        # The model's ||x||^2 for the Gaussian kernel: the interpolated spectrum's energy (Parseval on the
        # half spectrum: the columns other than 0 and the Nyquist one count twice).
        xx = self._model_energy()
        for s in self.scales:
            sc = min(max(self._scale * s, self._min_scale), self._max_scale)
            z = self._features(frame, self._center, sc)
            resp = detect(self._xf, self._alphaf, xx, z, self.kernel, **self._kw())
            if self.subpixel:
                dy, dx, peak = subpixel_peak(resp)
            else:
                i, j = np.unravel_index(int(np.argmax(resp)), resp.shape)
                peak = float(resp[i, j])
                dy = i - resp.shape[0] if i >= resp.shape[0] / 2 else i
                dx = j - resp.shape[1] if j >= resp.shape[1] / 2 else j
            score = peak * (1.0 if s == 1.0 else self.scale_weight)
            if best is None or score > best[0]:
                best = (score, peak, dy, dx, sc)
        assert best is not None
        _, peak, dy, dx, sc = best
        self.last_peak = peak
        ok = peak >= self.detect_thresh
        if ok:
            step = self._px_per_cell * sc
            cx = min(max(self._center[0] + dx * step, 0.0), frame.shape[1])
            cy = min(max(self._center[1] + dy * step, 0.0), frame.shape[0])
            self._center, self._scale = (cx, cy), sc
            xfeat = self._features(frame, self._center, self._scale)
            xf, alphaf = train_filter(xfeat, self._yf, self.kernel, self.lambda_, **self._kw())
            r = self.interp_factor
            self._xf = (1.0 - r) * self._xf + r * xf
            self._alphaf = (1.0 - r) * self._alphaf + r * alphaf
        return bool(ok), self.box

    def _model_energy(self) -> float:
        h, w = self._cos.shape
        p = np.abs(self._xf) ** 2
        wgt = np.full(p.shape[1], 2.0)
        wgt[0] = 1.0
        if w % 2 == 0:
            wgt[-1] = 1.0
        return float(np.sum(p * wgt[None, :, None]) / (h * w))

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The current ``(x, y, w, h)``."""
        w, h = self._target[0] * self._scale, self._target[1] * self._scale
        return (float(self._center[0] - w / 2.0), float(self._center[1] - h / 2.0), float(w), float(h))
