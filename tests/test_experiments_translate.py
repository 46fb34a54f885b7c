"""``handgrad run translate-dates`` / ``translate-en-es``: quick runs end to end (results, translator file,
heat maps, the BLEU table) and their one-line option errors."""

import json
import math
import os
import subprocess
import sys

import pytest

from handgrad.experiments.translate_en_es import inverse_sigmoid_k
from handgrad.seq2seq.translator import Translator, TranslatorError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def handgrad(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    env.pop("HANDGRAD_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "handgrad", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def _bible_missing():
    from handgrad.data.bible import data_dir

    if not (data_dir() / "bible_en_es.tsv").exists():
        return "the verse-pair cache is not built (run `handgrad run translate-en-es --quick` once; needs diatheke)"
    return None


def test_translate_dates_quick(tmp_path):
    out = tmp_path / "dates"
    p = handgrad("run", "translate-dates", "--quick", "--no-progress", "--out", str(out), "--heatmaps", "2")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["experiment"] == "translate-dates" and r["n_test"] == 50 and r["test_locales"] > 10
    for k in ("test_exact_match", "test_token_accuracy", "val_exact_match"):
        assert 0.0 <= r[k] <= 1.0
    assert r["test_token_accuracy"] > 0.0  # even one epoch gets the dashes and digits of some positions
    assert r["epochs_run"] == 1 and r["parameters"] > 1000
    assert len(r["heatmaps"]) == 2 and all(os.path.getsize(h) > 1000 for h in r["heatmaps"])
    assert (out / "learning_curves.png").exists() and (out / "history.csv").exists()
    tr = Translator.load(r["translator"], experiment="translate-dates")
    assert len(tr.translate("14 March 1987")) <= tr.max_tgt_len
    with pytest.raises(TranslatorError, match="saved by experiment 'translate-dates', not 'translate-en-es'"):
        Translator.load(r["translator"], experiment="translate-en-es")


def test_translate_en_es_quick(tmp_path):
    reason = _bible_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "enes"
    p = handgrad("run", "translate-en-es", "--quick", "--no-progress", "--out", str(out), "--rows", "tf-attn,ss",
                 "--beam", "2")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "results.json").read_text())
    assert [row["row"] for row in r["table"]] == ["tf-attn", "ss"]
    for row in r["table"]:
        for k in ("val_bleu_greedy", "test_bleu_greedy", "test_bleu_beam"):
            assert 0.0 <= row[k] <= 100.0
        assert row["epochs_run"] == 1
    assert r["table"][1]["final_teacher_forcing"] < 1.0  # scheduled sampling did decay
    assert r["table"][0]["final_teacher_forcing"] == 1.0
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 4 and "attention | teacher forcing" in table[2] and "no attention | scheduled" in table[3]
    assert (out / "tf-attn" / "attention_0.png").exists()
    Translator.load(out / "translator.safetensors", experiment="translate-en-es")


def test_option_errors_are_one_line():
    p = handgrad("run", "translate-en-es", "--quick", "--rows", "tf,bogus")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("handgrad run translate-en-es: error: --rows: unknown row(s) bogus; "
                                "choose from tf, tf-attn, ss, ss-attn")
    p = handgrad("run", "translate-en-es", "--quick", "--resume", "x.safetensors")
    assert p.returncode == 2 and p.stderr == ("handgrad run translate-en-es: error: --resume is not supported by "
                                              "translate-en-es: it trains one model per row; rerun the rows you "
                                              "need with --rows (see `handgrad run translate-en-es --help`)\n")
    p = handgrad("run", "translate-dates", "--quick", "--n-train", "0")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "handgrad run translate-dates: error: --n-train must be >= 1, got 0"


def test_inverse_sigmoid_k_puts_the_half_point_where_asked():
    for half in (10.0, 750.0, 5000.0):
        k = inverse_sigmoid_k(half)
        assert k * math.log(k) == pytest.approx(half, rel=1e-9)
        assert k / (k + math.exp(half / k)) == pytest.approx(0.5, rel=1e-9)
