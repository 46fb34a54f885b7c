"""Quick end-to-end runs of the lead's issue-4 experiments: clockwork-waveform, mdlstm-fashion,
hmrnn-char-lm (files written, numbers in range), and their option errors."""

import json

from _markers import needs_fashion_mnist

from handgrad.cli.main import main


def _run(tmp_path, *args):
    out = tmp_path / args[0]
    assert main(["run", *args, "--quick", "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), out


def test_clockwork_waveform_quick(tmp_path):
    r, out = _run(tmp_path, "clockwork-waveform")
    assert (out / "waveform.png").stat().st_size > 10_000
    assert 0 <= r["clockwork_nmse"] < 1.5 and 0 <= r["plain_rnn_nmse"] < 2
    # equal budgets of weights, within a few percent
    for other in ("plain_rnn", "lstm"):
        assert abs(r["clockwork_parameters"] - r[f"{other}_parameters"]) / r["clockwork_parameters"] < 0.1
    assert 0 <= r["lstm_nmse"] < 2


@needs_fashion_mnist
def test_mdlstm_fashion_quick(tmp_path):
    r, out = _run(tmp_path, "mdlstm-fashion")
    assert 0.3 < r["test_accuracy"] <= 1.0  # one epoch on 1,024 images: far above chance (0.1)
    assert (out / "learning_curves.png").exists()


def test_hmrnn_char_lm_quick(tmp_path):
    r, out = _run(tmp_path, "hmrnn-char-lm")
    assert 0 < r["val_bits_per_char"] < 7 and r["steps"] >= 1
    assert 0 <= r["boundary_rate_layer1"] <= 1
    assert (out / "boundaries.png").stat().st_size > 5_000


def test_bad_options_exit_2(capsys):
    assert main(["run", "mdlstm-fashion", "--patch", "5", "--quick"]) == 2
    assert "--patch" in capsys.readouterr().err
