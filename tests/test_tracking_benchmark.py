"""``handgrad run tracking-benchmark`` on a tiny configuration, and its pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handgrad.cli.main import main
from tests._markers import needs_fashion_mnist


@needs_fashion_mnist
def test_tiny_benchmark_run_writes_table_plots_and_scores(tmp_path, capsys):
    out = tmp_path / "tb"
    code = main(["run", "tracking-benchmark", "--no-progress", "--trackers", "kcf,kcf-hog,opencv-kcf", "--sequences",
                 "2", "--min-frames", "12", "--max-frames", "12", "--mire2-frames", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert r["sequences"] == 2 and r["frames"] == 24
    for name in ("kcf", "kcf-hog"):
        row = r["trackers"][name]
        assert 0 <= row["auc"] <= 1 and 0 <= row["precision20"] <= 1 and row["fps"] > 0
    assert r["trackers"]["kcf-hog"]["precision20"] > 0.5  # an easy 12-frame start: the tracker holds on
    assert set(r["trackers"]) | set(r["skipped"]) == {"kcf", "kcf-hog", "opencv-kcf"}
    for f in ("results.md", "precision.png", "success.png", "attributes.png"):
        assert (out / f).stat().st_size > 100
    assert "| kcf-hog |" in (out / "results.md").read_text()


def test_unknown_tracker_is_one_line(tmp_path, capsys):
    assert main(["run", "tracking-benchmark", "--trackers", "kcf,foo", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--trackers: unknown ['foo']" in err and err.count("\n") == 1


def test_run_tracker_times_and_keeps_the_first_box():
    from handgrad.experiments.tracking_benchmark import _targets, run_tracker

    calls = []

    class Fake:
        def init(self, frame, box):
            calls.append(("init", box))

        def update(self, frame):
            calls.append("update")
            return True, (1.0, 2.0, 3.0, 4.0)

    boxes, secs = run_tracker(Fake, [np.zeros((4, 4, 3), np.uint8)] * 3, np.array([5.0, 6, 7, 8]))
    assert calls == [("init", (5.0, 6.0, 7.0, 8.0)), "update", "update"] and secs >= 0
    np.testing.assert_array_equal(boxes, [[5, 6, 7, 8], [1, 2, 3, 4], [1, 2, 3, 4]])
    t = _targets({"kcf-hog": {"precision20": 0.7, "fps": 90.0, "attributes": {"SV": {"auc": 0.4}}},
                  "opencv-kcf": {"precision20": 0.6, "fps": 100.0, "attributes": {}},
                  "siamrpn": {"precision20": 0.5, "fps": 10.0, "attributes": {"SV": {"auc": 0.5}}}})
    assert t["kcf-hog P@20 >= opencv-kcf"].startswith("met") and t["kcf-hog fps >= opencv-kcf"].startswith("MISSED")
    assert t["siamrpn AUC SV > kcf-hog"] == "met (0.500 vs 0.400)"


def test_opencv_peer_follows_the_protocol():
    pytest.importorskip("cv2")
    from scipy.ndimage import gaussian_filter

    from handgrad.experiments.tracking_benchmark import OpenCVKCF

    rng = np.random.default_rng(0)
    frame = gaussian_filter(rng.random((120, 160, 3)) * 255, (3, 3, 0))
    frame = ((frame - frame.min()) / np.ptp(frame) * 255).astype(np.uint8)
    t = OpenCVKCF()
    t.init(OpenCVKCF.prepare(frame), (40, 30, 30, 30))
    for k in range(1, 6):  # 2 px per frame to the right
        ok, box = t.update(OpenCVKCF.prepare(np.roll(frame, 2 * k, axis=1)))
    # OpenCV 5's KCF answers one frame late here (measured: 40, 42, 44, 46, 48 for 42, 44, ..., 50)
    assert ok and 46 <= box[0] <= 50 and abs(box[1] - 30) <= 1
