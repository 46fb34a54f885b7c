"""``handgrad run distill --quick``: the table, the omitted-class variant and its bias fix, bad options."""

import json
import os

import pytest

from handgrad.cli import main as cli_main


def test_quick_run_makes_the_table(tmp_path):
    out = tmp_path / "o"
    assert cli_main.main(["run", "distill", "--quick", "--no-progress", "--teacher-hidden", "64",
                          "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    n = r["n_test"]
    for key in ("teacher", "student_alone", "distilled", "distilled_without_3"):
        assert 0 <= r[key]["test_errors"] <= n and r[key]["test_error_rate"] == r[key]["test_errors"] / n
    omit = r["distilled_without_3"]
    assert 0 <= omit["errors_on_3"] <= omit["n_test_of_class"] == n // 10
    assert omit["bias_shift"] >= 0 and 0 <= omit["test_errors_after_bias_shift"] <= n
    assert "| teacher" in (out / "results.md").read_text()
    assert os.path.getsize(out / "distilled" / "learning_curves.png") > 5000


@pytest.mark.parametrize("bad", [["--temperature", "0"], ["--alpha", "2"], ["--omit", "12"]])
def test_bad_options_exit_2(tmp_path, bad, capsys):
    assert cli_main.main(["run", "distill", "--quick", "--out", str(tmp_path), *bad]) == 2
    assert "must" in capsys.readouterr().err


@pytest.mark.slow
def test_full_run_distillation_helps(tmp_path):
    """The BENCHMARKS.md run (about 7 minutes): teacher < distilled < student alone in test errors."""
    out = tmp_path / "o"
    assert cli_main.main(["run", "distill", "--no-progress", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["teacher"]["test_errors"] < r["distilled"]["test_errors"] < r["student_alone"]["test_errors"]
    omit = r["distilled_without_3"]
    assert omit["errors_on_3"] < omit["n_test_of_class"] // 2  # most 3s right without ever seeing one
    assert omit["test_errors_after_bias_shift"] <= omit["test_errors"]
