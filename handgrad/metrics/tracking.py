"""OTB evaluation of single-object trackers (Wu, Lim & Yang, "Online object tracking: a benchmark",
CVPR 2013; PAMI 2015), one-pass evaluation (OPE).

Per frame ``t`` with predicted and ground-truth boxes ``(x, y, w, h)``:

* centre location error ``e_t = || c(pred_t) - c(gt_t) ||_2`` (pixels);
* overlap ``o_t = IoU(pred_t, gt_t)`` (:func:`handgrad.vision.ops.box_iou`).

Per sequence, over the frames where the target is visible:

* precision curve ``P(tau) = mean_t [e_t <= tau]`` for ``tau = 0, 1, ..., 50`` px; the score is ``P(20)``;
* success curve ``S(theta) = mean_t [o_t > theta]`` for ``theta = 0, 0.05, ..., 1``; the score is its
  area under the curve, ``AUC = mean_theta S(theta)`` (as the OTB toolkit computes it).

Over a set of sequences (all, or those with an attribute tag), the curves are averaged over sequences
(each sequence weighs the same, as in the OTB toolkit). :func:`plot_precision` / :func:`plot_success`
draw the OTB paper's figures as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from handgrad.vision.ops import box_convert, box_iou

__all__ = ["center_error", "overlap", "precision_curve", "success_curve", "SequenceResult", "evaluate_sequence",
           "aggregate", "plot_precision", "plot_success", "plot_attributes", "PRECISION_THRESHOLDS",
           "SUCCESS_THRESHOLDS"]

PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)


def _boxes(b: np.ndarray | Sequence, name: str) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"tracking metrics: {name} must be (N, 4) boxes (x, y, w, h), got shape {a.shape}")
    return a


def _pair(pred: np.ndarray | Sequence, gt: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"tracking metrics: pred and gt need the same number of frames, got {len(p)} and {len(g)}")
    return p, g


def center_error(pred: np.ndarray | Sequence, gt: np.ndarray | Sequence) -> np.ndarray:
    """``(N,)`` Euclidean distance between box centres, pixels."""
    p, g = _pair(pred, gt)
    d = (p[:, :2] + p[:, 2:] / 2) - (g[:, :2] + g[:, 2:] / 2)
    return np.hypot(d[:, 0], d[:, 1])


def overlap(pred: np.ndarray | Sequence, gt: np.ndarray | Sequence) -> np.ndarray:
    """``(N,)`` IoU of each predicted box with the ground truth of the same frame."""
    p, g = _pair(pred, gt)
    px, gx = box_convert(p, "xywh", "xyxy"), box_convert(g, "xywh", "xyxy")
    out = np.empty(len(p))
    step = 256  # the diagonal of pairwise IoU, a block at a time (O(N) memory)
    for i in range(0, len(p), step):
        out[i:i + step] = np.diagonal(np.asarray(box_iou(px[i:i + step], gx[i:i + step])))
    return out


def precision_curve(errors: np.ndarray, thresholds: np.ndarray = PRECISION_THRESHOLDS) -> np.ndarray:
    """``P(tau) = fraction of frames with centre error <= tau`` for each threshold."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    if e.size == 0:
        return np.full(len(thresholds), np.nan)
    return np.searchsorted(e, thresholds, side="right") / e.size


def success_curve(overlaps: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS) -> np.ndarray:
    """``S(theta) = fraction of frames with IoU > theta`` for each threshold."""
    o = np.sort(np.asarray(overlaps, dtype=np.float64))
    if o.size == 0:
        return np.full(len(thresholds), np.nan)
    return 1.0 - np.searchsorted(o, thresholds, side="right") / o.size


@dataclass
class SequenceResult:
    """One tracker on one sequence: the curves, scores and speed."""

    name: str
    precision: np.ndarray
    success: np.ndarray
    attributes: list[str] = field(default_factory=list)
    fps: float = float("nan")
    frames: int = 0  # frames tracked (the fps's frames)
    evaluated: int = 0  # frames scored (the object visible)

    @property
    def precision20(self) -> float:
        return float(self.precision[20])

    @property
    def auc(self) -> float:
        return float(np.mean(self.success))


def evaluate_sequence(pred: np.ndarray | Sequence, gt: np.ndarray | Sequence, visible: np.ndarray | None = None,
                      name: str = "", attributes: Sequence[str] = (), fps: float = float("nan")) -> SequenceResult:
    """Curves of one tracker run; frames where ``visible`` is False (target fully hidden) are left out."""
    e, o = center_error(pred, gt), overlap(pred, gt)
    n = len(e)
    if visible is not None:
        v = np.asarray(visible, dtype=bool)
        if v.shape != e.shape:
            raise ValueError(f"evaluate_sequence: visible must be ({len(e)},), got shape {v.shape}")
        e, o = e[v], o[v]
    return SequenceResult(name, precision_curve(e), success_curve(o), list(attributes), fps, n, len(e))


def aggregate(results: Sequence[SequenceResult], attribute: str | None = None) -> dict:
    """Mean curves over the sequences (those tagged ``attribute`` if given): ``{"precision", "success",
    "precision20", "auc", "sequences", "fps"}`` (fps: total frames / total time)."""
    tagged = [r for r in results if attribute is None or attribute in r.attributes]
    rs = [r for r in tagged if r.evaluated > 0]  # a sequence with the object never visible scores nothing
    if not rs:
        return {"sequences": 0, "precision": None, "success": None, "precision20": float("nan"),
                "auc": float("nan"), "fps": float("nan")}
    p = np.mean([r.precision for r in rs], axis=0)
    s = np.mean([r.success for r in rs], axis=0)
    timed = [r for r in tagged if np.isfinite(r.fps) and r.fps > 0 and r.frames > 0]
    fps = (sum(r.frames for r in timed) / sum(r.frames / r.fps for r in timed)) if timed else float("nan")
    return {"precision": p, "success": s, "precision20": float(p[20]), "auc": float(np.mean(s)),
            "sequences": len(rs), "fps": fps}


def _draw(ax, curves: Mapping[str, np.ndarray], x: np.ndarray, scores: Mapping[str, float], title: str,
          xlabel: str, ylabel: str, legend_loc: str) -> None:
    colour = {n: f"C{i % 10}" for i, n in enumerate(sorted(curves))}  # one colour per tracker in every panel
    for name in sorted(curves, key=lambda n: -scores[n]):  # legend ranked by score, as in the OTB figures
        ax.plot(x, curves[name], lw=2, color=colour[name], label=f"{name} [{scores[name]:.3f}]")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)


def _plot(curves: Mapping[str, np.ndarray], x: np.ndarray, scores: Mapping[str, float], path: str, title: str,
          xlabel: str, ylabel: str, legend_loc: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=110)
    _draw(ax, curves, x, scores, title, xlabel, ylabel, legend_loc)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_attributes(per_attribute: Mapping[str, Mapping[str, np.ndarray]], path: str, counts: Mapping[str, int]
                    | None = None) -> str:
    """One PNG with the success plot of every attribute: ``{attribute: {tracker: success curve}}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_attribute)
    cols = min(4, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), dpi=100, squeeze=False)
    for ax, attr in zip(axes.ravel(), names):
        curves = per_attribute[attr]
        n = f" ({counts[attr]})" if counts and attr in counts else ""
        _draw(ax, curves, SUCCESS_THRESHOLDS, {k: float(np.mean(v)) for k, v in curves.items()},
              f"Success plots of OPE - {attr}{n}", "Overlap threshold", "Success rate", "lower left")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_precision(curves: Mapping[str, np.ndarray], path: str, title: str = "Precision plots of OPE") -> str:
    """The OTB precision plot (PNG): one curve per tracker, legend = precision at 20 px."""
    scores = {k: float(v[20]) for k, v in curves.items()}
    return _plot(curves, PRECISION_THRESHOLDS, scores, path, title, "Location error threshold (px)", "Precision",
                 "lower right")


def plot_success(curves: Mapping[str, np.ndarray], path: str, title: str = "Success plots of OPE") -> str:
    """The OTB success plot (PNG): one curve per tracker, legend = AUC."""
    scores = {k: float(np.mean(v)) for k, v in curves.items()}
    return _plot(curves, SUCCESS_THRESHOLDS, scores, path, title, "Overlap threshold", "Success rate", "lower left")
