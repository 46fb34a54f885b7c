"""``handgrad report``: the static page lists every run with its results and figures, needs no JavaScript, and
renders in headless Chromium (skipped with a reason where Debian's ``chromium`` is not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from PIL import Image

from handgrad.cli import main as cli_main


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    for name, acc in (("lenet-fashion", 0.91), ("mlp-fashion-quick", 0.7)):
        d = root / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "experiment": name.replace("-quick", ""), "test_accuracy": acc, "wall_time_s": 1.5,
            "data": {"path": "/usr/share/datasets/fashion-mnist", "fingerprint": "d357103e02b5"},
            "options": {"epochs": 2, "quick": name.endswith("quick")}, "note": "<b>escaped</b>"}))
        Image.new("RGB", (200, 120), (200, 30, 30)).save(d / "learning_curves.png")
    return root


def test_report_lists_every_run_with_tables_and_figures(runs, capsys):
    assert cli_main.main(["report", str(runs)]) == 0
    page = (runs / "report.html").read_text()
    assert "report: " in capsys.readouterr().out
    for name in ("lenet-fashion", "mlp-fashion-quick"):
        assert f'src="{name}/learning_curves.png"' in page
    assert "0.91" in page and "d357103e02b5" in page and "<details>" in page
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped</b>" not in page
    assert "<script" not in page.lower()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli_main.main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli_main.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no results.json under" in err and err.count("\n") == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install "
                                                               "chromium) to render the report headless")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    assert cli_main.main(["report", str(runs)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1400", f"--screenshot={shot}", (runs / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = numpy_image(shot)
    # the two red figures were loaded and drawn (a broken image would leave no pure red block)
    red = (img[..., 0] > 180) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() >= 2 * 150 * 80, red.sum()


def numpy_image(path):
    import numpy

    return numpy.asarray(Image.open(path).convert("RGB")).astype(int)
