"""Saved translators: a round trip translates identically; loading refuses what is not a translator (or is
another experiment's); bad sentences; ``handgrad translate`` one-line errors via subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest

import handgrad as hg
from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.training import BucketBatchLoader, Seq2SeqTrainer, encode_pairs
from handgrad.seq2seq.translator import TRANSLATOR_FORMAT, Translator, TranslatorError
from handgrad.seq2seq.vocab import Vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = ["the lord said", "and god saw the light", "the light"]
TGT = ["dijo el señor", "y vió dios la luz", "la luz"]


def _translator(attention="additive", train=True):
    sv = Vocab.build(SRC, level="word")
    tv = Vocab.build(TGT, level="word")
    hg.manual_seed(0)
    m = Seq2Seq(len(sv), len(tv), 8, 12, attention=attention)
    if train:  # a few steps so that the outputs are not all one token
        from handgrad.optim import Adam

        tr = Seq2SeqTrainer(m, Adam(m.parameters(), lr=3e-2), verbose=False)
        tr.fit(BucketBatchLoader(encode_pairs(SRC, TGT, sv, tv), 3), epochs=15)
    return Translator(m, sv, tv, "translate-test", max_src_len=6, max_tgt_len=8, meta={"note": "unit test"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tr = _translator()
    path = str(tmp_path_factory.mktemp("tr") / "translator.safetensors")
    tr.save(path)
    return tr, path


def test_round_trip_translates_identically(saved):
    tr, path = saved
    back = Translator.load(path, experiment="translate-test")
    assert back.experiment == "translate-test" and back.meta == {"note": "unit test"}
    assert (back.max_src_len, back.max_tgt_len) == (6, 8)
    assert back.src_vocab.itos == tr.src_vocab.itos and back.tgt_vocab.itos == tr.tgt_vocab.itos
    assert back.model.config == tr.model.config
    for k, v in tr.model.state_dict().items():
        np.testing.assert_array_equal(back.model.state_dict()[k], v)
    for text in [*SRC, "the unknown light"]:
        assert back.translate_ids([text]) == tr.translate_ids([text])
        assert back.translate(text, beam_size=3) == tr.translate(text, beam_size=3)
        a, b = tr.translate_with_details(text), back.translate_with_details(text)
        assert a.text == b.text and a.ids == b.ids
        np.testing.assert_array_equal(a.attention, b.attention)
    # it learned its three sentences (so equality above compares real translations)
    assert [back.translate(s) for s in SRC] == [TGT[0], "y vió dios la luz", TGT[2]]


def test_translation_details_report_unknown_tokens():
    tr = _translator(train=False)
    t = tr.translate_with_details("the zebra said")
    assert t.unknown == ["zebra"] and t.source_tokens == ["the", "zebra", "said"]
    assert t.attention.shape == (len(t.ids) + 1, 4)
    assert _translator(attention=None, train=False).translate_with_details("the light").attention is None


def test_bad_sentences():
    tr = _translator(train=False)
    with pytest.raises(TranslatorError, match="Translator: the sentence is empty"):
        tr.translate("   ")
    with pytest.raises(TranslatorError, match="the sentence has 6 tokens but this model takes at most 5"):
        tr.translate("the the the the the the")
    assert isinstance(tr.translate("the the the the the"), str)  # exactly the limit is fine


def test_constructor_checks_vocab_sizes():
    tr = _translator(train=False)
    with pytest.raises(TranslatorError, match="expects vocabularies of 11 and 12 tokens but got 4 and 12"):
        Translator(tr.model, Vocab([]), tr.tgt_vocab, "x", 5, 5)
    with pytest.raises(TranslatorError, match="max lengths must be >= 1"):
        Translator(tr.model, tr.src_vocab, tr.tgt_vocab, "x", 0, 5)


def test_load_refuses_what_is_not_a_translator(saved, tmp_path):
    tr, path = saved
    with pytest.raises(TranslatorError, match="was saved by experiment 'translate-test', not 'translate-dates'"):
        Translator.load(path, experiment="translate-dates")
    ckpt = tmp_path / "last.safetensors"
    hg.save({"format": "handgrad.trainer/1", "model": tr.model.state_dict()}, str(ckpt))
    with pytest.raises(TranslatorError, match="is not a translator file \\(it is a Trainer checkpoint"):
        Translator.load(ckpt)
    weights = tmp_path / "weights.safetensors"
    hg.save(tr.model.state_dict(), str(weights))
    with pytest.raises(TranslatorError, match="without a translator format tag"):
        Translator.load(weights)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(TranslatorError, match="notes.txt is not a translator file"):
        Translator.load(text)
    with pytest.raises(TranslatorError, match="is a directory"):
        Translator.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Translator.load(tmp_path / "missing.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    state = tr.state_dict()
    del state["model"]["output.weight"]
    hg.save(state, str(damaged))
    with pytest.raises(TranslatorError, match="damaged translator file"):
        Translator.load(damaged)
    assert tr.state_dict()["format"] == TRANSLATOR_FORMAT


# -- handgrad translate ----------------------------------------------------------------------------------
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    env.pop("HANDGRAD_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "handgrad", "translate", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def _one_line_error(p, *needles):
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("handgrad translate: error: "), err
    for n in needles:
        assert n in err, err


def test_cli_translate_and_its_errors(saved, tmp_path):
    tr, path = saved
    p = _cli(path, "the lord said")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == tr.translate("the lord said") and p.stderr == ""
    p = _cli(path, "and god saw the light", "--beam", "3")
    assert p.returncode == 0 and p.stdout.strip() == tr.translate("and god saw the light", beam_size=3)
    p = _cli(path, "the zebra said")
    assert p.returncode == 0
    assert p.stderr.strip() == "handgrad translate: warning: not in the vocabulary, translated as <unk>: 'zebra'"
    assert p.stdout.strip() == tr.translate("the zebra said")
    _one_line_error(_cli(path, ""), "the sentence is empty")
    _one_line_error(_cli(path, "the " * 7), "the sentence has 7 tokens but this model takes at most 5")
    ckpt = tmp_path / "best.safetensors"
    hg.save({"format": "handgrad.trainer/1", "epoch": 1}, str(ckpt))
    _one_line_error(_cli(str(ckpt), "the light"), "is not a translator file", "Trainer checkpoint")
    _one_line_error(_cli(str(tmp_path / "nope.safetensors"), "the light"), "no such file")
    p = _cli(path, "the light", "--beam", "0")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--beam" in p.stderr
