"""BLEU equals sacrebleu's corpus BLEU with default settings; token accuracy and exact match."""

import random

import numpy as np
import pytest
import sacrebleu

from handgrad.metrics import corpus_bleu, exact_match, token_accuracy

WORDS = 'the cat sat on a mat , dog 3.14 1990-2000 ran fast ! "quoted" it\'s &amp; x-y El perro comió .'.split()


@pytest.mark.parametrize("seed", range(40))
def test_corpus_bleu_equals_sacrebleu(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    hyps = [" ".join(rng.choices(WORDS, k=rng.randint(0, 14))) for _ in range(n)]
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 14))) for _ in range(n)]
    refs2 = [" ".join(rng.choices(WORDS, k=rng.randint(1, 14))) for _ in range(n)]
    assert corpus_bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-12)
    assert corpus_bleu(hyps, [refs, refs2]) == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [refs, refs2]).score, abs=1e-12
    )


def test_corpus_bleu_known_values():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["completely different"], ["the cat sat on the mat"]) == 0.0


def test_corpus_bleu_errors():
    with pytest.raises(ValueError, match="2 hypotheses"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of strings"):
        corpus_bleu(["a"], "a")


def test_token_accuracy_ignores_padding_and_exact_match():
    pred = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    tgt = np.array([[1, 2, 4, 0], [4, 5, 6, 0]])
    assert token_accuracy(pred, tgt, pad_index=0) == pytest.approx(4 / 6)
    assert exact_match(["abc", "de"], ["abc", "df"]) == 0.5
    with pytest.raises(ValueError, match="shape"):
        token_accuracy(pred[:1], tgt)
