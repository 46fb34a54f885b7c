"""Tracking sequence loaders: OTB folders (round trip), videos, and mire-2's derived ground truth."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from handgrad.data.otb import (
    MIRE2_DIR,
    SequenceError,
    frame_source,
    load_mire2,
    load_otb,
    load_otb_sequence,
    mire2_boxes,
    read_video,
    write_otb_sequence,
)


def test_otb_round_trip_and_layouts(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(5)]
    boxes = np.array([[3, 4, 10, 12], [4, 4, 10, 12], [5, 5, 11, 12], [6, 5, 11, 13], [7, 6, 11, 13.5]], float)
    vis = np.array([1, 1, 0, 1, 1], bool)
    write_otb_sequence(str(tmp_path / "Seq1"), frames, boxes, vis, ["SV", "OCC"])
    with open(tmp_path / "Seq1" / "groundtruth_rect.txt") as f:
        assert f.readline().strip() == "4.00,5.00,10.00,12.00"  # 1-based on disk, like OTB
    s = load_otb_sequence(str(tmp_path / "Seq1"))
    assert len(s) == 5 and s.attributes == ["SV", "OCC"] and s.name == "Seq1"
    np.testing.assert_allclose(s.boxes, boxes)
    np.testing.assert_array_equal(s.visible, vis)
    assert s[0].shape == (30, 40, 3) and s[0].dtype == np.uint8
    # the original OTB layout: tab-separated ground truth, frames in img/, no attributes file
    d = tmp_path / "Seq2" / "img"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(frames[i][:, :, 0]).save(d / f"{i + 1:04d}.png")
    (tmp_path / "Seq2" / "groundtruth_rect.txt").write_text("1\t2\t5\t6\n2\t3\t5\t6\n3\t4\t5\t6\n")
    s2 = load_otb_sequence(str(tmp_path / "Seq2"))
    assert s2[2].shape == (30, 40, 3) and np.array_equal(s2[2][:, :, 1], frames[2][:, :, 0])
    np.testing.assert_allclose(s2.boxes[0], [0, 1, 5, 6])
    assert [q.name for q in load_otb(str(tmp_path))] == ["Seq1", "Seq2"]


def test_loader_errors_are_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SequenceError, match="no frames"):
        load_otb_sequence(str(tmp_path / "empty"))
    with pytest.raises(SequenceError, match="no such file or folder"):
        frame_source(str(tmp_path / "nope"))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SequenceError, match="unreadable video"):
        read_video(str(bad))
    s = tmp_path / "s"
    (s / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(s / "img" / "0001.png")
    (s / "groundtruth_rect.txt").write_text("1,2,3\n")
    with pytest.raises(SequenceError, match="expected 4 numbers"):
        load_otb_sequence(str(s))


def test_gif_video_round_trip(tmp_path):
    frames = [np.full((12, 16, 3), 40 * i, np.uint8) for i in range(4)]
    Image.fromarray(frames[0]).save(tmp_path / "v.gif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=40)
    got = frame_source(str(tmp_path / "v.gif"))
    assert len(got) == 4 and all(np.array_equal(a, b) for a, b in zip(got.frames, frames))


def _ffmpeg_available() -> bool:
    from handgrad.data.otb import _ffmpeg

    return _ffmpeg() is not None


@pytest.mark.skipif(not _ffmpeg_available(), reason="no ffmpeg executable")
def test_video_decoding_with_ffmpeg(tmp_path):
    import subprocess

    from handgrad.data.otb import _ffmpeg

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.fromarray(np.full((48, 64, 3), (30 * i, 100, 200), np.uint8)).save(src / f"{i:03d}.png")
    out = tmp_path / "v.avi"
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-i", str(src / "%03d.png"), "-c:v", "ffv1", str(out)],
                   check=True)
    frames = read_video(str(out))
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    assert abs(int(frames[5][0, 0, 0]) - 150) <= 2  # lossless codec, up to the RGB<->YUV round trip
    assert len(read_video(str(out), max_frames=2)) == 2


def test_mire2_box_derivation_on_a_drawn_disc():
    """The derivation finds an ellipse drawn beside bright clutter (a big rectangle, a thin bar)."""
    frames, want = [], []
    yy, xx = np.mgrid[0:120, 0:160]
    for t in range(4):
        g = np.full((120, 160), 30, np.uint8)
        g[5:40, 100:158] = 255  # bright rectangle: fill ratio 1, not a disc
        g[90:93, 10:150] = 230  # a bar
        cx, cy, a, b = 50 + 5 * t, 60 - 2 * t, 14 + t, 9
        g[((xx + 0.5 - cx) / a) ** 2 + ((yy + 0.5 - cy) / b) ** 2 <= 1] = 250
        frames.append(g)
        want.append((cx - a, cy - b, 2 * a, 2 * b))
    got = mire2_boxes(frames)
    np.testing.assert_allclose(got, np.array(want, float), atol=1.0)
    with pytest.raises(SequenceError, match="frame 1: no disc"):
        mire2_boxes([np.zeros((20, 20), np.uint8)])


_NEEDS_VISP = pytest.mark.skipif(not os.path.isdir(MIRE2_DIR), reason="Debian visp-images-data not installed")


@_NEEDS_VISP
@pytest.mark.parametrize("n", [pytest.param(None, marks=pytest.mark.slow), 60])
def test_mire2_loader_follows_the_disc(n):
    seq = load_mire2(max_frames=n)
    assert len(seq) == (n or 501) and seq[0].shape == (288, 384, 3)
    b = seq.boxes
    np.testing.assert_allclose(b[0], [128, 190, 64, 46])  # the first frame's disc, read off the image
    # the derived box is tight around bright pixels, and the disc moves smoothly (no switch to clutter)
    for k in (0, len(seq) // 2, len(seq) - 1):
        g = seq[k][:, :, 0]
        x, y, w, h = b[k].astype(int)
        inside = g[y:y + h, x:x + w] > 200
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert abs(inside.mean() - np.pi / 4) < 0.06
    c = b[:, :2] + b[:, 2:] / 2
    assert np.hypot(*np.diff(c, axis=0).T).max() < 15
    assert np.abs(np.diff(b[:, 2:], axis=0)).max() <= 4
