"""Greedy, sampling and beam search over a tiny random model with output feedback; beam search against
brute-force enumeration of every sequence."""

import itertools

import numpy as np
import pytest

import handgrad as hg
from handgrad.seq2seq.decoding import beam_search, greedy_decode, sample_decode

BOS, EOS, V = 0, 1, 4  # symbols 2 and 3 are words; BOS is never produced


class TinyFeedbackModel:
    """h' = tanh(W h + E[y_prev]), log p(y | h') = log_softmax(U h'): a real output-feedback dynamics."""

    def __init__(self, seed, batch=3, hidden=5):
        r = np.random.default_rng(seed)
        self.W = r.normal(0, 1, (hidden, hidden))
        self.E = r.normal(0, 1.5, (V, hidden))
        self.U = r.normal(0, 2, (hidden, V))
        self.h0 = r.normal(0, 1, (batch, hidden))

    def step(self, tokens, h):
        h = np.tanh(h @ self.W.T + self.E[tokens])
        z = h @ self.U
        z[:, BOS] = -1e9  # BOS is never emitted
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True)), h

    def log_likelihood(self, h, seq):
        tok, total = BOS, 0.0
        h = h[None]
        for y in seq:
            logp, h = self.step(np.array([tok]), h)
            total += logp[0, y]
            tok = y
        return total


def brute_force_best(model, h, max_len):
    best = (-np.inf, None)
    for L in range(1, max_len + 1):
        for body in itertools.product([2, 3], repeat=L - 1):
            for last in ([EOS] if L < max_len else [EOS, 2, 3]):
                seq = list(body) + [last]
                ll = model.log_likelihood(h, seq)
                if ll > best[0]:
                    best = (ll, seq)
    ll, seq = best
    return ll, seq[:-1] if seq[-1] == EOS else seq


@pytest.mark.parametrize("seed", range(6))
def test_wide_beam_returns_exact_maximum_likelihood_sequence(seed):
    model = TinyFeedbackModel(seed)
    max_len = 5
    res = beam_search(model.step, model.h0, 3, BOS, EOS, max_len, beam_size=64)
    for i in range(3):
        ll, seq = brute_force_best(model, model.h0[i], max_len)
        assert res[i][0].tokens == seq
        assert res[i][0].log_prob == pytest.approx(ll, abs=1e-9)


def test_beam_of_one_equals_greedy_and_scores_are_log_likelihoods():
    model = TinyFeedbackModel(7)
    g = greedy_decode(model.step, model.h0, 3, BOS, EOS, 6)
    b = beam_search(model.step, model.h0, 3, BOS, EOS, 6, beam_size=1)
    assert [r[0].tokens for r in b] == g
    b4 = beam_search(model.step, model.h0, 3, BOS, EOS, 6, beam_size=4)
    for i, hyps in enumerate(b4):
        for h in hyps:
            seq = h.tokens + ([EOS] if h.finished else [])
            assert h.log_prob == pytest.approx(model.log_likelihood(model.h0[i], seq), abs=1e-9)
        assert all(hyps[j].score >= hyps[j + 1].score for j in range(len(hyps) - 1))


def test_sampling_is_seeded_and_low_temperature_is_greedy():
    model = TinyFeedbackModel(3)
    hg.manual_seed(0)
    a = sample_decode(model.step, model.h0, 3, BOS, EOS, 6)
    hg.manual_seed(0)
    assert sample_decode(model.step, model.h0, 3, BOS, EOS, 6) == a
    cold = sample_decode(model.step, model.h0, 3, BOS, EOS, 6, temperature=1e-4)
    assert cold == greedy_decode(model.step, model.h0, 3, BOS, EOS, 6)
    top1 = sample_decode(model.step, model.h0, 3, BOS, EOS, 6, top_k=1)
    assert top1 == cold
    with pytest.raises(ValueError, match="temperature"):
        sample_decode(model.step, model.h0, 3, BOS, EOS, 6, temperature=0)
