"""The experiments moved onto the one training loop keep their seeded ``--quick`` numbers.

The reference numbers were measured with the code before the move (commit 6ba9653, each experiment with its
own step loop or its own Trainer subclass): ``handgrad run NAME --quick --out DIR`` (char-lm with
``--lr-schedule plateau``, since its default budget schedule follows the CPU clock; translate-dates with
babel 2.18.0, whose CLDR locales are its data). They must not change
when the loop changes; ``rel=1e-9`` leaves room only for a different summation order inside an op.
Also here: Ctrl-C in a real run, then ``--resume`` from its checkpoint, finishes with exit 0, not interrupted.
"""

from __future__ import annotations

import json

import pytest

from handgrad.cli.main import main

# The pins are the NumPy reference path's numbers (taken before the compiled kernels existed); the compiled
# kernels are compared with that path in test_recurrent_kernels.py / test_functional_cnn_kernels.py.
pytestmark = pytest.mark.usefixtures("numpy_kernels")

PINNED = {
    "char-lm": {
        "args": ["--lr-schedule", "plateau"],
        "heldout_bpc": 4.835332982458266,
        "history.val_bpc": [5.499669346104484, 4.7677954518327414],
        "history.train_bpc": [5.939707508229554, 5.188010346973434],
    },
    "translate-dates": {  # with babel 2.18.0 (pinned in pyproject: its CLDR locales are the data)
        "test_token_accuracy": 0.1,
        "file:history.json.loss": [2.6903422546386717],
        # the loss is now F.cross_entropy(ignore_index=pad), whose gradient may differ from the old fused op's
        # by <= 1 ulp per element (measured on this data: no change)
        "file:history.json.val_loss": [2.63148832321167],
        "file:history.json.val_token_accuracy": [0.1690909090909091],
    },
    "one-to-many": {
        "test_teacher_forced_mse": 0.9723755121231079,
        "sigma": 1.020269440029475,
        "judge_real_test_accuracy": 0.09166666666666666,
        "generated_class_accuracy": 0.08,
        "history.nll": [0.5594998240470886, 0.5152464151382447],
    },
    "vanishing-gradients": {
        "rnn_val_mse": 0.1805497109889984, "lstm_val_mse": 0.1671464592218399, "gru_val_mse": 0.17714042961597443,
    },
    "clockwork-waveform": {
        "clockwork_nmse": 0.24876209080457462, "plain_rnn_nmse": 0.9972757082483167, "lstm_nmse": 0.6417475448608005,
    },
    "caption-emoji": {
        "file:attention/history.json.loss": [5.408994078636169, 5.350130915641785],
        "file:no_attention/history.json.loss": [5.384291887283325, 5.367619872093201],
    },
}


def _value(results: dict, out, key: str):
    if key.startswith("file:"):
        path, col = key[5:].rsplit(".", 1)
        return [row[col] for row in json.loads((out / path).read_text())["rows"]]
    if key.startswith("history."):
        return [row[key[8:]] for row in results["history"]]
    return results[key]


@pytest.mark.parametrize("name", list(PINNED))
def test_quick_numbers_are_those_of_the_code_before_the_one_loop(name, tmp_path):
    if name == "translate-dates":
        from importlib.metadata import version

        if version("babel") != "2.18.0":
            pytest.skip(f"translate-dates' pins were measured with babel 2.18.0 (pinned in pyproject), "
                        f"not {version('babel')}: other locales, other data")
    pins = dict(PINNED[name])
    args = pins.pop("args", [])
    out = tmp_path / name
    assert main(["run", name, "--quick", "--no-progress", "--out", str(out), *args]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is False
    for key, want in pins.items():
        assert _value(results, out, key) == pytest.approx(want, rel=1e-9, abs=0), key


@pytest.mark.slow
def test_translate_en_es_quick_numbers_are_pinned(tmp_path):
    assert main(["run", "translate-en-es", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert [r["val_bleu_greedy"] for r in table] == pytest.approx(
        [0.6521185750305364, 0.40679481794427447, 0.6874943988306037, 0.40042470253707957], rel=1e-9)
    assert [r["test_bleu_greedy"] for r in table] == pytest.approx(
        [0.6341255288588221, 0.48431324474500165, 0.6341255288588221, 0.48017877028956446], rel=1e-9)


def test_char_lm_ctrl_c_then_resume_finishes_with_exit_0_and_the_uninterrupted_numbers(tmp_path, monkeypatch,
                                                                                      capsys):
    from handgrad.experiments import char_lm

    common = ["--quick", "--no-progress", "--lr-schedule", "plateau", "--sample-len", "5"]
    assert main(["run", "char-lm", *common, "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())

    original = char_lm.CharLMProgress.on_batch_end

    def interrupt(self, batch, logs):  # Ctrl-C in the 4th window of epoch 2
        original(self, batch, logs)
        if self.trainer.epoch == 1 and batch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(char_lm.CharLMProgress, "on_batch_end", interrupt)
    out = tmp_path / "cut"
    assert main(["run", "char-lm", *common, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    ckpt = out / "interrupted.safetensors"
    assert "interrupted during epoch 2; rolled back to the end of epoch 1" in err
    assert f"--resume {ckpt}" in err  # the hint names the command-line option
    assert json.loads((out / "results.json").read_text())["interrupted"] is True
    monkeypatch.setattr(char_lm.CharLMProgress, "on_batch_end", original)

    assert main(["run", "char-lm", *common, "--out", str(tmp_path / "resumed"), "--resume", str(ckpt)]) == 0
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["interrupted"] is False
    assert '"interrupted"' not in (tmp_path / "resumed" / "history.json").read_text()
    assert [h["val_bpc"] for h in resumed["history"]] == [h["val_bpc"] for h in full["history"]]
    assert resumed["heldout_bpc"] == full["heldout_bpc"]


def test_char_lm_refuses_a_checkpoint_of_another_configuration_in_one_line(tmp_path, capsys):
    """The CLI's up-front check passes it (a char-lm checkpoint), the Trainer refuses it before anything runs:
    one line, exit 2, and the run folder's own checkpoint is left as it was."""
    out = tmp_path / "run"
    common = ["--quick", "--no-progress", "--sample-len", "5"]
    assert main(["run", "char-lm", *common, "--out", str(out)]) == 0
    other = tmp_path / "other"
    assert main(["run", "char-lm", *common, "--hidden", "8", "--out", str(other), "--epochs", "1"]) == 0
    before = (out / "last.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["run", "char-lm", *common, "--out", str(out), "--resume", str(other / "last.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another model or configuration" in err, err
    assert (out / "last.safetensors").read_bytes() == before
