"""``handgrad run noisy-labels --quick``: the table of the three methods, curves, C learned, bad options."""

import json
import os

import pytest

from handgrad.cli import main as cli_main


def have_fashion_mnist() -> bool:
    try:
        from handgrad.data import FashionMNIST

        FashionMNIST(train=False)
        return True
    except FileNotFoundError:
        return False


needs_data = pytest.mark.skipif(not have_fashion_mnist(), reason="Fashion-MNIST is not installed (bash setup.sh)")


@needs_data
def test_quick_run_makes_the_table(tmp_path):
    out = tmp_path / "o"
    assert cli_main.main(["run", "noisy-labels", "--quick", "--no-progress", "--settings", "confusing",
                          "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    for m in ("clean-only", "naive", "noise-model"):
        assert 0.1 < r[f"{m}_confusing"] <= 1.0
    nm = r["runs"]["noise-model"]["confusing"]
    assert 0 <= nm["noise_precision"] <= 1 and 0 <= nm["noise_recall"] <= 1
    assert len(nm["confusion_top"]) == 10
    table = (out / "results.md").read_text()
    assert "| noise-model |" in table and "confusing 40%" in table
    for run in ("clean-only", "naive-confusing", "noise-model-confusing"):
        assert os.path.getsize(out / run / "learning_curves.png") > 5000


@pytest.mark.parametrize("bad", [["--settings", "pairwise"], ["--rate", "1.5"], ["--clean", "5"]])
def test_bad_options_exit_2(tmp_path, bad, capsys):
    assert cli_main.main(["run", "noisy-labels", "--quick", "--out", str(tmp_path), *bad]) == 2
    assert "must" in capsys.readouterr().err


@needs_data
@pytest.mark.slow
def test_full_run_noise_model_beats_naive(tmp_path):
    """The BENCHMARKS.md run (about 5 minutes): the noise model wins in every setting, clearly so under confusing
    noise, and its learned C finds every confusing partner."""
    from handgrad.robust import FASHION_CONFUSING

    out = tmp_path / "o"
    assert cli_main.main(["run", "noisy-labels", "--no-progress", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    for s in ("symmetric", "confusing", "mixed"):
        assert r[f"noise-model_{s}"] > r[f"naive_{s}"]
        assert r[f"noise-model_{s}"] > r["clean-only_symmetric"]
    assert r["noise-model_confusing"] > r["naive_confusing"] + 0.05
    top = {int(k): v for k, v in r["runs"]["noise-model"]["confusing"]["confusion_top"].items()}
    assert top == FASHION_CONFUSING
