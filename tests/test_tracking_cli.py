"""``handgrad track``: CSV + GIF on a folder and a GIF video, one-line errors."""

from __future__ import annotations

import csv
from contextlib import nullcontext

import numpy as np
import pytest
from PIL import Image

from handgrad.cli.main import main


def _frames(tmp_path, n=12):
    """A textured square sliding right 2 px per frame over a smooth background."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:90, 0:120]
    bg = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1).astype(np.uint8)
    d = tmp_path / "seq"
    d.mkdir()
    frames = []
    for t in range(n):
        f = bg.copy()
        f[30:50, 20 + 2 * t:40 + 2 * t] = tex
        frames.append(f)
        Image.fromarray(f).save(d / f"{t:04d}.png")
    return d, frames


@pytest.mark.parametrize("tracker", ["kcf", "kcf-hog"])
def test_track_folder_writes_csv_and_gif(tmp_path, capsys, tracker):
    d, _ = _frames(tmp_path)
    out = tmp_path / "out"
    assert main(["track", str(d), "--box", "20,30,20,20", "--tracker", tracker, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "boxes.csv")))
    assert len(rows) == 12 and rows[0]["x"] == "20.00"
    last = rows[-1]
    assert abs(float(last["x"]) - 42) < 2 and abs(float(last["y"]) - 30) < 2 and last["ok"] == "1"
    with Image.open(out / "tracked.gif") as g:
        assert g.n_frames == 12
    assert "boxes:" in capsys.readouterr().out


def test_track_gif_video(tmp_path):
    _, frames = _frames(tmp_path, 8)
    Image.fromarray(frames[0]).save(tmp_path / "v.gif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    out = tmp_path / "o"
    assert main(["track", str(tmp_path / "v.gif"), "--box", "20,30,20,20", "--out", str(out), "--gif-frames", "0"]) == 0
    assert len(open(out / "boxes.csv").read().splitlines()) == 9 and not (out / "tracked.gif").exists()


@pytest.mark.parametrize("args,message", [
    (["--box", "500,30,20,20"], "lies outside"),
    (["--box", "1,2,3"], "4 numbers"),
    (["--box", "1,2,0,4"], "positive width"),
    (["--box", "1,2,3,4", "--tracker", "siamrpn", "--weights", "/nonexistent.safetensors"], "nonexistent"),
])
def test_track_errors_are_one_line(tmp_path, capsys, args, message):
    d, _ = _frames(tmp_path, 3)
    with pytest.raises(SystemExit) if "numbers" in message or "positive" in message else nullcontext():
        code = main(["track", str(d), *args, "--out", str(tmp_path / "o")])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_tracker_names_are_the_library_s():
    from handgrad.cli import track
    from handgrad.tracking import TRACKERS

    assert track.TRACKERS == TRACKERS


def test_track_bad_sources(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.avi").write_bytes(b"garbage")
    for src, msg in [(tmp_path / "empty", "no frames"), (tmp_path / "bad.avi", "unreadable video"),
                     (tmp_path / "missing", "no such file")]:
        assert main(["track", str(src), "--box", "1,1,5,5"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("handgrad track: error:") and msg in err and len(err.splitlines()) == 1
