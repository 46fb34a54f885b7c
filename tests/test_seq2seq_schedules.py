"""Scheduled-sampling decays, token mixing, and the exact no-feedback quantities against enumeration."""

import itertools
import math

import numpy as np
import pytest

import handgrad as hg
from handgrad.seq2seq.independent_outputs import marginal_at, max_likelihood_sequence, prob_appears
from handgrad.seq2seq.scheduled_sampling import TeacherForcingSchedule, mix_tokens


def test_schedules_follow_the_papers_formulas():
    lin = TeacherForcingSchedule("linear", k=1.0, c=0.01, eps_min=0.2)
    assert [lin(i) for i in (0, 10, 50, 100)] == pytest.approx([1.0, 0.9, 0.5, 0.2])
    ex = TeacherForcingSchedule("exponential", k=0.99)
    assert ex(100) == pytest.approx(0.99**100)
    inv = TeacherForcingSchedule("inverse_sigmoid", k=10)
    assert inv(0) == pytest.approx(10 / 11)
    assert inv(50) == pytest.approx(10 / (10 + math.exp(5)))
    vals = [inv(i) for i in range(0, 200, 10)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ValueError, match="0 < k < 1"):
        TeacherForcingSchedule("exponential", k=1.5)
    with pytest.raises(ValueError, match="kind"):
        TeacherForcingSchedule("cosine")


def test_mix_tokens_rate():
    hg.manual_seed(0)
    gt, sm = np.zeros((200, 50), np.int64), np.ones((200, 50), np.int64)
    assert (mix_tokens(gt, sm, 0.3) == 0).mean() == pytest.approx(0.3, abs=0.02)
    assert (mix_tokens(gt, sm, 1.0) == 0).all() and (mix_tokens(gt, sm, 0.0) == 1).all()
    with pytest.raises(ValueError, match="shape"):
        mix_tokens(gt, sm[:1], 0.5)


def test_independent_outputs_match_enumeration():
    rng = np.random.default_rng(0)
    T, V = 4, 3
    P = rng.dirichlet(np.ones(V), size=T)
    seqs = list(itertools.product(range(V), repeat=T))
    probs = np.array([np.prod([P[t, s[t]] for t in range(T)]) for s in seqs])
    assert probs.sum() == pytest.approx(1.0)
    best, ll = max_likelihood_sequence(P)
    assert tuple(best) == seqs[int(probs.argmax())] and ll == pytest.approx(np.log(probs.max()))
    for n in range(T):
        brute = np.array([probs[[s[n] == v for s in seqs]].sum() for v in range(V)])
        np.testing.assert_allclose(marginal_at(P, n), brute, atol=1e-12)
    brute_any = np.array([probs[[v in s for s in seqs]].sum() for v in range(V)])
    np.testing.assert_allclose(prob_appears(P), brute_any, atol=1e-12)
    with pytest.raises(ValueError, match="probabilities"):
        prob_appears(P * 2)
    with pytest.raises(IndexError, match="outside"):
        marginal_at(P, 9)
