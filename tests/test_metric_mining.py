"""Pair/triplet mining against brute force; retrieval and verification metrics against hand counts."""

import itertools

import numpy as np
import pytest

from handgrad.metric import (
    PKBatchSampler,
    balanced_batch_indices,
    best_threshold,
    map_at_r,
    mine_pairs,
    mine_triplets,
    recall_at_k,
    sample_pairs,
    verification_accuracy,
)

rng = np.random.default_rng(1)


def batch(n=12, classes=3, dim=2):
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)
    y[classes : 2 * classes] = np.arange(classes)  # every class has two samples
    x = rng.standard_normal((n, dim))
    return x, y, np.linalg.norm(x[:, None] - x[None], axis=2)


def brute_triplets(y, D, strategy, margin):
    n = len(y)
    valid = [(a, p, m) for a, p, m in itertools.product(range(n), repeat=3)
             if a != p and y[a] == y[p] and y[m] != y[a]]
    if strategy == "all":
        return sorted(valid)
    if strategy == "hard":
        out = []
        for a in range(n):
            ps = [p for p in range(n) if p != a and y[p] == y[a]]
            ns = [m for m in range(n) if y[m] != y[a]]
            if ps and ns:
                p = max(ps, key=lambda j: (D[a, j], -j))
                m = min(ns, key=lambda j: (D[a, j], j))
                out.append((a, p, m))
        return out
    out = []
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            semi = [m for m in range(n) if y[m] != y[a] and D[a, p] < D[a, m] < D[a, p] + margin]
            if semi:
                out.append((a, p, min(semi, key=lambda j: (D[a, j], j))))
    return out


@pytest.mark.parametrize("strategy", ["all", "hard", "semihard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mine_triplets_equals_brute_force(strategy, seed):
    global rng
    rng = np.random.default_rng(seed)
    x, y, D = batch()
    a, p, n = mine_triplets(y, D, strategy, margin=0.5)
    got = sorted(zip(a.tolist(), p.tolist(), n.tolist()))
    ref = sorted(brute_triplets(y, D, strategy, 0.5))
    assert got == ref and len(ref) > 0


def test_batch_all_active_only_keeps_positive_loss_triplets():
    x, y, D = batch()
    a, p, n = mine_triplets(y, D, "all", margin=0.3, active_only=True)
    ref = [t for t in brute_triplets(y, D, "all", 0) if D[t[0], t[1]] - D[t[0], t[2]] + 0.3 > 0]
    assert sorted(zip(a.tolist(), p.tolist(), n.tolist())) == sorted(ref)
    assert 0 < len(ref) < len(brute_triplets(y, D, "all", 0))


def test_hard_triplets_on_a_hand_made_batch():
    # 1-D points: class 0 at 0, 1, 5; class 1 at 2, 9
    x = np.array([0.0, 1.0, 5.0, 2.0, 9.0])[:, None]
    y = np.array([0, 0, 0, 1, 1])
    D = np.abs(x - x.T)
    a, p, n = mine_triplets(y, D, "hard")
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [2, 2, 0, 4, 3]
    assert n.tolist() == [3, 3, 3, 1, 2]


def test_mine_pairs_all_hard_semihard_brute_force():
    x, y, D = batch()
    i, j, s = mine_pairs(y, D, "all")
    assert len(i) == 12 * 11 // 2 and np.all(i < j) and np.array_equal(s, (y[i] == y[j]).astype(int))
    i, j, s = mine_pairs(y, D, "hard")
    for a in range(12):
        pos = [k for k in range(12) if k != a and y[k] == y[a]]
        neg = [k for k in range(12) if y[k] != y[a]]
        assert (a, max(pos, key=lambda k: (D[a, k], -k)), 1) in set(zip(i.tolist(), j.tolist(), s.tolist()))
        assert (a, min(neg, key=lambda k: (D[a, k], k)), 0) in set(zip(i.tolist(), j.tolist(), s.tolist()))
    i, j, s = mine_pairs(y, D, "semihard", margin=0.5)
    trip = brute_triplets(y, D, "semihard", 0.5)
    assert set(zip(i[s == 1].tolist(), j[s == 1].tolist())) == {(a, p) for a, p, _ in trip}
    assert set(zip(i[s == 0].tolist(), j[s == 0].tolist())) == {(a, m) for a, _, m in trip}


def test_mining_errors():
    with pytest.raises(ValueError, match=r"no valid triplet in a batch of 3 with class counts \{0: 1, 1: 1, 2: 1\}"):
        mine_triplets([0, 1, 2])
    with pytest.raises(ValueError, match="no valid triplet"):
        mine_triplets([4, 4, 4, 4], np.zeros((4, 4)), "hard")
    with pytest.raises(ValueError, match="unknown strategy 'easy'"):
        mine_triplets([0, 0, 1], strategy="easy")
    with pytest.raises(ValueError, match=r"distances must be \(3, 3\) for 3 labels, got \(2, 2\)"):
        mine_triplets([0, 0, 1], np.zeros((2, 2)), "hard")
    with pytest.raises(ValueError, match="needs the"):
        mine_triplets([0, 0, 1], None, "semihard")
    with pytest.raises(TypeError, match="labels must be integers"):
        mine_triplets(np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        mine_pairs(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="at least one same-class and one different-class pair"):
        mine_pairs([0, 1, 2])


def test_recall_at_k_and_map_at_r_by_hand():
    # 1-D embeddings: 0:[0.0, 0.1, 5.0]  1:[1.0, 1.05]
    e = np.array([[0.0], [0.1], [5.0], [1.0], [1.05]])
    y = np.array([0, 0, 0, 1, 1])
    # nearest others: q0 -> 1(0) 3 4 2 ; q1 -> 0(0) 3 4 2 ; q2 -> 4 3 1 0 ; q3 -> 4(1) 1 0 2 ; q4 -> 3(1) 1 0 2
    r = recall_at_k(e, y, k=(1, 2, 3))
    assert r[1] == pytest.approx(4 / 5) and r[2] == pytest.approx(4 / 5) and r[3] == pytest.approx(5 / 5)
    # AP@R: q0 R=2: rel [1,0] -> (1/1)/2 = .5 ; q1 same .5 ; q2 R=2: [0,0] -> 0 ; q3 R=1: [1] -> 1 ; q4 -> 1
    assert map_at_r(e, y) == pytest.approx((0.5 + 0.5 + 0 + 1 + 1) / 5)


def test_map_at_r_against_direct_definition_random():
    e = rng.standard_normal((30, 3))
    y = rng.integers(0, 4, 30)
    D = np.linalg.norm(e[:, None] - e[None], axis=2)
    aps = []
    for q in range(30):
        others = [j for j in np.argsort(D[q], kind="stable") if j != q]
        R = int((y == y[q]).sum() - 1)
        if R == 0:
            continue
        rel = [y[j] == y[q] for j in others[:R]]
        aps.append(sum(np.mean(rel[: i + 1]) for i in range(R) if rel[i]) / R)
    assert map_at_r(e, y) == pytest.approx(np.mean(aps), rel=1e-12)
    k1 = np.mean([y[[j for j in np.argsort(D[q], kind="stable") if j != q][0]] == y[q] for q in range(30)])
    assert recall_at_k(e, y, 1)[1] == pytest.approx(k1)


def test_best_threshold_and_verification_accuracy():
    d = np.array([0.1, 0.2, 0.35, 0.4, 0.5, 0.8, 0.9])
    same = np.array([1, 1, 0, 1, 1, 0, 0])
    t = best_threshold(d, same)
    assert t == pytest.approx(0.65)  # cut after 0.5: 6 of 7 right, the unique best
    assert verification_accuracy(d, same, t) == pytest.approx(6 / 7)
    assert verification_accuracy(d, same, 0.25) == pytest.approx(5 / 7)
    assert verification_accuracy(d, same, 0.0) == pytest.approx(3 / 7)
    assert best_threshold(np.array([0.3, 0.1]), np.array([0, 0])) < 0.1  # all different: call none "same"
    with pytest.raises(ValueError, match="differ in shape"):
        verification_accuracy(d, same[:3], 0.5)
    with pytest.raises(ValueError, match=r"recall_at_k: every K must be in \[1, 4\]"):
        recall_at_k(np.zeros((5, 2)), np.arange(5), k=5)
    with pytest.raises(ValueError, match="map_at_r: no class has two samples"):
        map_at_r(np.zeros((3, 2)), np.arange(3))


def test_sampling_pairs_and_pk_batches():
    y = np.repeat(np.arange(5), 4)
    i, j, s = sample_pairs(y, 50, np.random.default_rng(0))
    assert s.sum() == 25 and np.all((y[i] == y[j]) == (s == 1)) and np.all(i[s == 1] != j[s == 1])
    b = balanced_batch_indices(y, 3, 4, np.random.default_rng(0))
    assert len(b) == 12 and len(np.unique(y[b])) == 3 and np.all(np.bincount(y[b])[np.unique(y[b])] == 4)
    batches = list(PKBatchSampler(y, 2, 2, n_batches=3, seed=0))
    assert len(batches) == 3 and all(len(bb) == 4 for bb in batches)
    mine_triplets(y[batches[0]])  # a PK batch always has a valid triplet
    with pytest.raises(ValueError, match="need 2 <= P <= 5 classes"):
        balanced_batch_indices(y, 6, 2)
    with pytest.raises(ValueError, match="need a class with two samples"):
        sample_pairs(np.arange(4), 10)
