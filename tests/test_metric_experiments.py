"""``handgrad run siamese-fashion`` / ``triplet-fashion`` in --quick mode: files, numbers in range, bad options."""

import json
import os

import pytest
from _markers import needs_fashion_mnist

from handgrad.cli import main as cli_main

needs_data = needs_fashion_mnist


@needs_data
@pytest.mark.parametrize("name,extra", [("siamese-fashion", []), ("triplet-fashion", ["--mining", "hard"])])
def test_quick_run_writes_curves_scatter_and_unseen_class_metrics(tmp_path, name, extra):
    out = tmp_path / "o"
    assert cli_main.main(["run", name, "--quick", "--no-progress", "--out", str(out), *extra]) == 0
    r = json.loads((out / "results.json").read_text())
    for key in ("recall@1", "recall@8", "mAP@R", "verification_accuracy", "pixels_recall@1"):
        assert 0.0 <= r[key] <= 1.0, key
    assert r["recall@1"] <= r["recall@2"] <= r["recall@4"] <= r["recall@8"]
    assert r["recall@1"] > 0.34  # three unseen classes: chance is about 1/3
    assert r["epochs_run"] == 2 and 1 <= r["best_epoch"] <= 2
    for png in ("learning_curves.png", "embedding.png"):
        assert os.path.getsize(out / png) > 5000
    hist = json.loads((out / "history.json").read_text())
    assert "val_loss" in json.dumps(hist)


@pytest.mark.parametrize("name,bad", [("siamese-fashion", ["--margin", "0"]), ("triplet-fashion", ["--p", "9"]),
                                      ("triplet-fashion", ["--margin", "-1"])])
def test_bad_options_exit_2(tmp_path, name, bad, capsys):
    assert cli_main.main(["run", name, "--quick", "--out", str(tmp_path), *bad]) == 2
    assert "must" in capsys.readouterr().err


@needs_data
@pytest.mark.slow
def test_full_triplet_run_beats_pixels_on_map_and_verification(tmp_path):
    """The BENCHMARKS.md run (about 4 minutes) on the unseen classes."""
    out = tmp_path / "o"
    assert cli_main.main(["run", "triplet-fashion", "--no-progress", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["mAP@R"] > r["pixels_mAP@R"] and r["verification_accuracy"] > r["pixels_verification_accuracy"]
    assert r["recall@1"] > 0.8
