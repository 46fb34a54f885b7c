"""The generated OTB-style benchmark: ground truth checked against the rendered pixels, each attribute's
measured effect, seeding, and the OTB folder round trip."""

from __future__ import annotations

import numpy as np
import pytest

from tests._markers import needs_fashion_mnist

pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def seqs():
    from handgrad.data.tracking_sequences import make_sequence

    tags = [("SV",), ("IV",), ("POC",), ("FOC",), ("FM",), ("IPR",), ("BC",), ("DIS",), ("SV", "IPR", "FOC")]
    return {t: make_sequence(100 + i, t, n_frames=60) for i, t in enumerate(tags)}


def test_boxes_match_the_rendered_pixels(seqs):
    """The pixels the object changes lie inside its box; with the object fully visible, they span it."""
    for tags, seq in seqs.items():
        r = seq.renderer
        for t in range(0, len(seq), 7):
            diff = np.any(r.render(t) != r.render(t, draw_target=False), axis=2)
            ys, xs = np.nonzero(diff)
            x, y, w, h = seq.boxes[t]
            assert (xs >= x).all() and (xs < x + w).all() and (ys >= y).all() and (ys < y + h).all(), (tags, t)
            if seq.visibility[t] == 1.0:
                # tight: the changed pixels reach (within a pixel or two of identical colours) every side
                assert xs.min() - x <= 2 and x + w - 1 - xs.max() <= 2, (tags, t)
                assert ys.min() - y <= 2 and y + h - 1 - ys.max() <= 2, (tags, t)
            if not seq.visible[t]:
                assert diff.sum() <= 0.1 * w * h  # hidden: at most the 10% visibility threshold shows
            else:
                assert diff.sum() > 0
            assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 240  # the object stays in the frame


def test_each_attribute_has_its_measured_effect(seqs):
    def area_ratio(s):
        a = s.boxes[:, 2] * s.boxes[:, 3]
        return a / a[0]

    def speed(s):
        c = s.boxes[:, :2] + s.boxes[:, 2:] / 2
        return np.hypot(*np.diff(c, axis=0).T)

    sv = area_ratio(seqs[("SV",)])
    assert sv.max() > 2 or sv.min() < 0.5
    assert speed(seqs[("FM",)]).max() > 20 and speed(seqs[("SV",)]).max() < 20
    assert (~seqs[("FOC",)].visible).sum() >= 3 and seqs[("FOC",)].attributes == ["OCC", "FOC"]
    poc = seqs[("POC",)].visibility
    assert poc.min() < 0.95 and seqs[("POC",)].visible.all()
    assert seqs[("DIS",)].visibility.min() == 1.0  # distractors pass behind, never hide the object
    ipr = seqs[("IPR",)].boxes
    assert np.ptp(seqs[("IPR",)].renderer._target.angle) > 40
    assert np.ptp(ipr[:, 2] / ipr[:, 3]) > 0.15  # rotation changes the box's aspect
    iv = [seqs[("IV",)][t].mean() for t in range(0, 60, 5)]
    assert max(iv) / min(iv) > 1.4
    r = seqs[("DIS",)].renderer
    near = [min(np.hypot(L.cx[t] - r._target.cx[t], L.cy[t] - r._target.cy[t]) for L in r._distractors)
            for t in range(60)]
    assert min(near) < r._target.height[0]  # a same-class sprite crosses the object
    assert seqs[("BC",)].renderer._photo is not None


def test_seeded_and_benchmark_design():
    from handgrad.data.tracking_sequences import BENCHMARK_TAGS, benchmark_recipes, make_sequence

    a, b = make_sequence(7, ("IPR", "DIS"), 20), make_sequence(7, ("IPR", "DIS"), 20)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert np.array_equal(a[13], b[13])
    assert not np.array_equal(a.boxes, make_sequence(8, ("IPR", "DIS"), 20).boxes)
    rec = benchmark_recipes()
    assert len(rec) >= 30 and all(100 <= n <= 300 for _, _, n in rec)
    counts = {t: sum((t in tags) or (t == "OCC" and bool({"POC", "FOC"} & set(tags))) for _, tags, _ in rec)
              for t in BENCHMARK_TAGS}
    assert min(counts.values()) >= 7, counts
    with pytest.raises(ValueError, match="unknown attributes"):
        make_sequence(0, ("XYZ",), 10)


def test_written_as_otb_folders(tmp_path):
    from handgrad.data.otb import load_otb
    from handgrad.data.tracking_sequences import make_sequence, write_benchmark

    seq = make_sequence(3, ("FOC",), 12, name="tiny")
    write_benchmark(str(tmp_path), [seq], progress=False)
    back = load_otb(str(tmp_path))[0]
    assert back.name == "tiny" and back.attributes == ["OCC", "FOC"] and len(back) == 12
    np.testing.assert_allclose(back.boxes, seq.boxes)
    np.testing.assert_array_equal(back.visible, seq.visible)
    assert np.abs(back[5].astype(int) - seq[5].astype(int)).mean() < 4  # JPEG
