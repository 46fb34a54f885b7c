"""OTB metrics against brute-force loops, and the plots."""

from __future__ import annotations

import os

import numpy as np
import pytest

from handgrad.metrics.tracking import (
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    aggregate,
    center_error,
    evaluate_sequence,
    overlap,
    plot_precision,
    plot_success,
    precision_curve,
    success_curve,
)


def _brute_iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _random_run(rng, n):
    gt = np.column_stack([rng.uniform(0, 200, n), rng.uniform(0, 200, n), rng.uniform(5, 60, n), rng.uniform(5, 60, n)])
    pred = gt + rng.normal(0, 12, size=(n, 4)) * np.array([1, 1, 0.5, 0.5])
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    pred[rng.random(n) < 0.1] += 300  # some frames lost completely
    return pred, gt


def test_errors_and_overlaps_match_loops():
    rng = np.random.default_rng(0)
    pred, gt = _random_run(rng, 600)  # more than one 256-frame block of the IoU diagonal
    e = center_error(pred, gt)
    o = overlap(pred, gt)
    for t in range(len(gt)):
        p, g = pred[t], gt[t]
        dx, dy = p[0] + p[2] / 2 - g[0] - g[2] / 2, p[1] + p[3] / 2 - g[1] - g[3] / 2
        assert np.isclose(e[t], np.sqrt(dx * dx + dy * dy))
        assert np.isclose(o[t], _brute_iou(p, g), rtol=1e-12, atol=1e-15)
    assert (o == 0).sum() >= 40 and (o > 0.5).sum() > 50  # the run exercises both ends


def test_curves_and_scores_match_brute_force():
    rng = np.random.default_rng(1)
    pred, gt = _random_run(rng, 157)
    vis = rng.random(157) > 0.15
    r = evaluate_sequence(pred, gt, vis, name="s", attributes=["OCC"], fps=50.0)
    e, o = center_error(pred, gt)[vis], overlap(pred, gt)[vis]
    prec = [sum(1 for x in e if x <= t) / len(e) for t in range(51)]
    succ = [sum(1 for x in o if x > t) / len(o) for t in np.arange(21) * 0.05]
    np.testing.assert_allclose(r.precision, prec)
    np.testing.assert_allclose(r.success, succ)
    assert r.precision20 == prec[20] and np.isclose(r.auc, np.mean(succ))
    assert r.frames == 157 and r.evaluated == vis.sum()
    # ties at a threshold: an error of exactly 20 px counts as precise, an IoU of exactly 0.5 not as success
    assert precision_curve(np.array([20.0]))[20] == 1.0
    assert success_curve(np.array([0.5]))[10] == 0.0 and success_curve(np.array([0.5]))[9] == 1.0
    assert len(PRECISION_THRESHOLDS) == 51 and len(SUCCESS_THRESHOLDS) == 21


def test_aggregate_averages_sequences_and_filters_attributes(tmp_path):
    rng = np.random.default_rng(2)
    rs = []
    for k, attrs in enumerate([["SV"], ["SV", "OCC"], ["FM"]]):
        pred, gt = _random_run(rng, 50 + 30 * k)
        rs.append(evaluate_sequence(pred, gt, name=str(k), attributes=attrs, fps=10.0 * (k + 1)))
    allr = aggregate(rs)
    np.testing.assert_allclose(allr["precision"], np.mean([r.precision for r in rs], axis=0))
    assert np.isclose(allr["auc"], np.mean([r.auc for r in rs]))
    sv = aggregate(rs, "SV")
    assert sv["sequences"] == 2 and np.isclose(sv["precision20"], (rs[0].precision20 + rs[1].precision20) / 2)
    frames = sum(r.frames for r in rs)
    assert np.isclose(allr["fps"], frames / sum(r.frames / r.fps for r in rs))
    assert aggregate(rs, "IV")["sequences"] == 0
    hidden = evaluate_sequence(rs[0].precision[:1].repeat(4).reshape(1, 4) + np.ones((1, 4)), np.ones((1, 4)),
                               np.zeros(1, bool), attributes=["SV"], fps=5.0)
    assert hidden.evaluated == 0 and aggregate([*rs, hidden], "SV")["sequences"] == 2  # scores nothing
    p = plot_precision({"a": rs[0].precision, "b": rs[1].precision}, str(tmp_path / "p.png"))
    s = plot_success({"a": rs[0].success, "b": rs[1].success}, str(tmp_path / "s.png"))
    for f in (p, s):
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(f) > 5000


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="pred must be \\(N, 4\\)"):
        center_error(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="same number of frames"):
        overlap(np.zeros((3, 4)), np.zeros((2, 4)))
