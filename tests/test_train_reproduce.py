"""Slow reproductions of the README's results table (``python -m pytest -m slow``).

Each runs a whole experiment with its default options, exactly as ``handgrad run NAME`` does, and checks
the reported targets. On the 2-core reference machine LeNet takes about an hour (more when shared), the
MLP about ten minutes and the early-stopping demo a few minutes.
"""

from __future__ import annotations

import json

import pytest

from handgrad.cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _need_data():
    try:
        from handgrad.data import FashionMNIST

        FashionMNIST(train=False)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed (bash setup.sh): {e}")


def run(name, out, *extra):
    assert cli_main.main(["run", name, "--no-progress", "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_lenet_fashion_reaches_90_percent(tmp_path):
    r = run("lenet-fashion", tmp_path)
    assert r["test_accuracy"] >= 0.90, r


def test_mlp_fashion_reaches_88_percent(tmp_path):
    r = run("mlp-fashion", tmp_path)
    assert r["test_accuracy"] >= 0.88, r


def test_early_stopping_stops_a_real_run_and_restores_the_best_epoch(tmp_path):
    r = run("early-stopping-fashion", tmp_path)
    assert r["stopped_before_max_epochs"] and r["epochs_run"] < r["max_epochs"]
    assert r["stopped_epoch"] == r["epochs_run"] == r["best_epoch"] + r["patience"]
    assert r["val_loss_at_best"] + 0.1 < r["val_loss_at_stop"]  # the validation loss had turned back up
    assert r["train_accuracy_at_stop"] > 0.95  # while it was memorising the 1,000 training images
