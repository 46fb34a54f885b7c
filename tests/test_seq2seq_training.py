"""Seq2seq training: batch layout, bucketing, the padded loss (vs PyTorch, finite differences, and padding
invariance), teacher forcing / free running / scheduled sampling in the trainer, decoding helpers."""

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.optim import Adam
from handgrad.seq2seq.decoding import greedy_decode
from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.plots import plot_attention
from handgrad.seq2seq.scheduled_sampling import TeacherForcingSchedule, mix_tokens
from handgrad.seq2seq.training import (
    Batch,
    BucketBatchLoader,
    DecodeValidation,
    Seq2SeqTrainer,
    TokenAccuracy,
    attention_weights,
    decode_ids,
    encode_pairs,
    make_batch,
    sequence_cross_entropy,
    sequence_scores,
)
from handgrad.seq2seq.vocab import Vocab
from handgrad.train import EarlyStopping

PAIRS = [([4, 5, 6, 2], [7, 8]), ([9, 2], [4, 5, 6, 7])]


def _model(attention="additive", V=12, emb=6, hidden=8, double=True, **kw):
    hg.manual_seed(0)
    m = Seq2Seq(V, V, emb, hidden, attention=attention, **kw)
    return m.double() if double else m


def _reverse_pairs(n, seed=0, V=8, max_len=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = list(rng.integers(4, V, rng.integers(1, max_len + 1)))
        out.append(([*map(int, s), 2], [int(x) for x in s[::-1]]))
    return out


# -- data ----------------------------------------------------------------------------------------------------
def test_make_batch_layout():
    b = make_batch(PAIRS)
    np.testing.assert_array_equal(b.src, [[4, 5, 6, 2], [9, 2, 0, 0]])
    np.testing.assert_array_equal(b.src_lengths, [4, 2])
    np.testing.assert_array_equal(b.tgt_in, [[1, 7, 8, 0, 0], [1, 4, 5, 6, 7]])
    np.testing.assert_array_equal(b.tgt_out, [[7, 8, 2, 0, 0], [4, 5, 6, 7, 2]])
    assert b.src.dtype == np.int64


def test_encode_pairs_adds_eos_to_sources_and_maps_unknowns():
    sv = Vocab(list("abc"), level="char")
    tv = Vocab(list("xy"), level="char")
    pairs = encode_pairs(["abz"], ["yx"], sv, tv)
    assert pairs == [([4, 5, 3, 2], [5, 4])]


def test_bucket_loader_covers_every_pair_once_and_groups_lengths():
    rng = np.random.default_rng(1)
    pairs = [([4] * int(n) + [2], [5] * int(m)) for n, m in zip(rng.integers(1, 40, 500), rng.integers(1, 30, 500))]
    loader = BucketBatchLoader(pairs, 16, shuffle=True, seed=3, pool=10)
    idx = loader.batch_indices()
    assert len(idx) == len(loader) == 32
    assert sorted(np.concatenate(idx).tolist()) == list(range(500))
    # within a batch the source lengths come from one sorted pool: spread far below the data's (1..40)
    spreads = [np.ptp([len(pairs[i][0]) for i in b]) for b in idx]
    assert np.mean(spreads) < 6
    # seeded: the same seed gives the same epoch, a new epoch a new order
    again = BucketBatchLoader(pairs, 16, seed=3, pool=10).batch_indices()
    assert all((a == b).all() for a, b in zip(idx, again))
    assert any((a != b).any() for a, b in zip(idx, loader.batch_indices()))
    ordered = BucketBatchLoader(pairs, 16, shuffle=False).batch_indices()
    lens = [len(pairs[i][0]) for b in ordered for i in b]
    assert lens == sorted(lens)
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.src.shape[0] == 16


def test_data_errors():
    with pytest.raises(ValueError, match="make_batch: no pairs"):
        make_batch([])
    with pytest.raises(ValueError, match="make_batch: a source sequence is empty"):
        make_batch([([], [4])])
    with pytest.raises(ValueError, match="encode_pairs: 2 sources but 1 targets"):
        encode_pairs(["a", "b"], ["c"], Vocab("abc"), Vocab("c"))
    with pytest.raises(ValueError, match="BucketBatchLoader: batch_size must be >= 1"):
        BucketBatchLoader(PAIRS, 0)
    with pytest.raises(ValueError, match="BucketBatchLoader: no pairs"):
        BucketBatchLoader([], 4)


# -- the loss ------------------------------------------------------------------------------------------------
def test_sequence_cross_entropy_vs_torch_and_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7))
    tgt = np.array([[3, 4, 2, 0, 0], [5, 6, 1, 4, 2]])
    x = hg.tensor(logits, requires_grad=True)
    loss = sequence_cross_entropy(x, tgt)
    loss.backward()
    xt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt.reshape(-1, 7), torch.tensor(tgt.reshape(-1)), ignore_index=0)
    lt.backward()
    assert loss.item() == pytest.approx(lt.item(), rel=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-12)
    assert (x.grad.numpy()[0, 3:] == 0).all()  # padded positions get no gradient
    assert hg.gradcheck(lambda z: sequence_cross_entropy(z, tgt), (hg.tensor(logits, requires_grad=True),))
    with pytest.raises(ValueError, match=r"sequence_cross_entropy: logits \(2, 5, 7\) do not match targets \(2, 4\)"):
        sequence_cross_entropy(x, tgt[:, :4])
    with pytest.raises(ValueError, match=r"sequence_cross_entropy: target ids must be in \[0, 7\), got \[0, 9\]"):
        sequence_cross_entropy(x, np.where(tgt == 6, 9, tgt))
    # float32 agrees with the generic F.cross_entropy; all padding gives NaN like PyTorch
    import handgrad.functional as F

    x32 = hg.tensor(logits.astype(np.float32))
    ref = F.cross_entropy(x32.reshape(-1, 7), hg.tensor(tgt.reshape(-1)), ignore_index=0)
    assert sequence_cross_entropy(x32, tgt).item() == pytest.approx(ref.item(), rel=1e-6)
    assert sequence_cross_entropy(x32, tgt).dtype == np.float32
    assert np.isnan(sequence_cross_entropy(x, np.zeros_like(tgt)).item())


def _batch_loss_and_grads(m, pairs, extra_pad=0):
    b = make_batch(pairs)
    src = np.pad(b.src, ((0, 0), (0, extra_pad)))
    tin, tout = np.pad(b.tgt_in, ((0, 0), (0, extra_pad))), np.pad(b.tgt_out, ((0, 0), (0, extra_pad)))
    for p in m.parameters():
        p.grad = None
    lg, _ = m(hg.tensor(src), b.src_lengths, hg.tensor(tin))
    loss = sequence_cross_entropy(lg, tout)
    loss.backward()
    return loss.item(), [p.grad.numpy().copy() for p in m.parameters()]


@pytest.mark.parametrize("attention,cell", [("additive", "lstm"), (None, "gru"), ("general", "lstm")])
def test_padding_never_changes_the_loss_or_its_gradient(attention, cell):
    """The padded batch loss is the token-weighted mean of the per-sentence losses, and extra padding
    columns change nothing (encoder lengths, attention mask and ignore_index together)."""
    m = _model(attention, cell=cell)
    (la, ga), (lb, gb) = _batch_loss_and_grads(m, PAIRS[:1]), _batch_loss_and_grads(m, PAIRS[1:])
    lab, gab = _batch_loss_and_grads(m, PAIRS)
    na, nb = len(PAIRS[0][1]) + 1, len(PAIRS[1][1]) + 1
    assert lab == pytest.approx((na * la + nb * lb) / (na + nb), rel=1e-12)
    for a, b, ab in zip(ga, gb, gab):
        np.testing.assert_allclose(ab * (na + nb), na * a + nb * b, rtol=1e-9, atol=1e-12)
    lp, gp = _batch_loss_and_grads(m, PAIRS, extra_pad=3)
    assert lp == pytest.approx(lab, rel=1e-12)
    for a, b in zip(gp, gab):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)


def test_token_accuracy_metric_ignores_padding():
    logits = np.zeros((1, 4, 5))
    logits[0, [0, 1, 2, 3], [3, 4, 1, 1]] = 1.0  # predicts 3 4 1 1
    m = TokenAccuracy()
    m.reset()
    m.update((hg.tensor(logits), None), np.array([[3, 2, 0, 0]]))
    assert m.compute() == 0.5


# -- training ------------------------------------------------------------------------------------------------
def test_training_loss_decreases_on_a_reverse_task():
    pairs = _reverse_pairs(240)
    hg.manual_seed(0)
    m = Seq2Seq(8, 8, 12, 24, attention="additive")
    tr = Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-2), grad_clip=5.0, verbose=False)
    hist = tr.fit(BucketBatchLoader(pairs, 32, seed=0), epochs=8)
    loss = hist["loss"]
    assert loss[-1] < 0.35 * loss[0], loss
    assert hist["token_accuracy"][-1] > 0.7
    assert tr.global_step == 8 * 8
    pred = decode_ids(m, [s for s, _ in pairs[:50]], 8)
    assert sequence_scores(pred, [t for _, t in pairs[:50]])["token_accuracy"] > 0.6


def test_trainer_steps_the_schedule_once_per_training_batch_and_validates_teacher_forced():
    pairs = _reverse_pairs(40)
    m = _model(None, V=8, double=False)
    sched = TeacherForcingSchedule("linear", k=1.0, c=0.1)
    seen = []
    orig = m.forward

    def spy(src, lengths, tgt_in, teacher_forcing=1.0):
        seen.append((m.training, teacher_forcing))
        return orig(src, lengths, tgt_in, teacher_forcing)

    m.forward = spy
    tr = Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-3), teacher_forcing=sched, verbose=False)
    hist = tr.fit(BucketBatchLoader(pairs, 10, seed=0), BucketBatchLoader(pairs, 20, shuffle=False), epochs=2)
    train_eps = [e for training, e in seen if training]
    np.testing.assert_allclose(train_eps, [1.0 - 0.1 * i for i in range(8)])
    assert all(e == 1.0 for training, e in seen if not training)  # validation is teacher-forced
    assert tr.global_step == 8
    np.testing.assert_allclose(hist["teacher_forcing"], [0.7, 0.3])
    # a checkpoint carries the schedule's clock
    state = tr.checkpoint_state(copy=True)
    assert state["updater_state"]["iteration"] == 8
    tr2 = Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-3), teacher_forcing=sched, verbose=False)
    tr2.load_checkpoint(state)
    assert tr2.global_step == 8 and tr2.epoch == 2


def test_free_running_ignores_the_ground_truth_and_teacher_forcing_ignores_samples():
    """eps = 0: the decoder inputs after <bos> are the model's own samples, so the ground-truth inputs do not
    matter (same RNG stream); eps = 1: the fused teacher-forced path."""
    m = _model("additive")
    b = make_batch(PAIRS)
    other = b.tgt_in.copy()
    other[:, 1:] = np.where(other[:, 1:] > 0, 11, 0)
    hg.manual_seed(5)
    lg1, _ = m(hg.tensor(b.src), b.src_lengths, hg.tensor(b.tgt_in), teacher_forcing=0.0)
    hg.manual_seed(5)
    lg2, _ = m(hg.tensor(b.src), b.src_lengths, hg.tensor(other), teacher_forcing=0.0)
    np.testing.assert_array_equal(lg1.numpy(), lg2.numpy())
    tf1, _ = m(hg.tensor(b.src), b.src_lengths, hg.tensor(b.tgt_in), teacher_forcing=1.0)
    tf2, _ = m(hg.tensor(b.src), b.src_lengths, hg.tensor(other), teacher_forcing=1.0)
    assert not np.allclose(tf1.numpy(), tf2.numpy())
    # the first step only sees <bos>, so it agrees across all eps
    np.testing.assert_allclose(lg1.numpy()[:, 0], tf1.numpy()[:, 0], rtol=1e-12)
    gt, sm = np.array([4, 5, 6]), np.array([7, 8, 9])
    np.testing.assert_array_equal(mix_tokens(gt, sm, 0.0), sm)
    np.testing.assert_array_equal(mix_tokens(gt, sm, 1.0), gt)


def test_free_running_training_gradients_match_finite_differences():
    m = _model("general", hidden=5, emb=4)
    b = make_batch(PAIRS)
    params = tuple(m.parameters())

    def loss_of(*_):
        hg.manual_seed(3)  # the same samples at every evaluation
        lg, _ = m(hg.tensor(b.src), b.src_lengths, hg.tensor(b.tgt_in), teacher_forcing=0.3)
        return sequence_cross_entropy(lg, b.tgt_out)

    assert hg.gradcheck(loss_of, params, directions=3)


def test_trainer_errors():
    m = _model(None)
    with pytest.raises(ValueError, match=r"Seq2SeqUpdater: teacher_forcing must be in \[0, 1\]"):
        Seq2SeqTrainer(m, Adam(m.parameters()), teacher_forcing=1.5)
    tr = Seq2SeqTrainer(m, Adam(m.parameters()))
    with pytest.raises(TypeError, match="Seq2SeqUpdater: expected a seq2seq Batch, got tuple"):
        tr.updater.update((1, 2))


# -- decoding and validation ---------------------------------------------------------------------------------
def test_decode_ids_batched_equals_one_by_one_and_beam_1_equals_greedy():
    m = _model("additive")
    sources = [s for s, _ in _reverse_pairs(9, seed=2, V=12)]
    batched = decode_ids(m, sources, 6, batch_size=4)
    with hg.no_grad():
        for s, out in zip(sources, batched):
            step, state, _ = m.decoder_step_fn(hg.tensor(np.array([s])), np.array([len(s)]))
            assert greedy_decode(step, state, 1, 1, 2, 6)[0] == out
    assert decode_ids(m, sources, 6, beam_size=1) == batched
    beam = decode_ids(m, sources, 6, beam_size=3)
    assert len(beam) == len(sources) and all(len(b) <= 6 for b in beam)
    with pytest.raises(ValueError, match="decode_ids: beam_size must be >= 1"):
        decode_ids(m, sources, 6, beam_size=0)
    with pytest.raises(ValueError, match="decode_ids: a source sequence is empty"):
        decode_ids(m, [[]], 6)


def test_attention_weights_are_those_of_greedy_decoding():
    m = _model("additive")
    src = [4, 5, 6, 7, 2]
    with hg.no_grad():
        step, st, _ = m.decoder_step_fn(hg.tensor(np.array([src])), np.array([5]))
        tok, out = np.array([1]), []
        for _ in range(4):
            logp, st = step(tok, st)
            tok = logp.argmax(axis=1)
            out.append(int(tok[0]))
    ids = out[: out.index(2)] if 2 in out else out[:3]
    w = attention_weights(m, src, ids)
    assert w.shape == (len(ids) + 1, 5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w, np.concatenate(st["attn"][: len(ids) + 1]), rtol=1e-10)
    with pytest.raises(ValueError, match="attention_weights: the model has no attention"):
        attention_weights(_model(None), src, ids)


def test_sequence_scores():
    s = sequence_scores([[4, 5], [4], [4, 5, 6, 7]], [[4, 5], [4, 6], [4, 5, 6]])
    assert s["exact_match"] == pytest.approx(1 / 3)
    # positions (with <eos>): 3/3 right, 1/3 right (4 ok; eos vs 6; nothing vs eos), 3/4 right (7 vs eos)
    assert s["token_accuracy"] == pytest.approx(7 / 10)
    with pytest.raises(ValueError, match="sequence_scores: 1 predictions for 2 targets"):
        sequence_scores([[4]], [[4], [5]])


def test_decode_validation_feeds_early_stopping():
    pairs = _reverse_pairs(60)
    tv = Vocab([str(i) for i in range(4, 8)], level="word")
    hg.manual_seed(0)
    m = Seq2Seq(8, 8, 8, 16, attention="additive")
    dv = DecodeValidation([s for s, _ in pairs[:20]], [t for _, t in pairs[:20]], tv, max_len=7)
    es = EarlyStopping(monitor="val_exact_match", mode="max", patience=1)
    tr = Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-2), callbacks=[es, dv], verbose=False)
    hist = tr.fit(BucketBatchLoader(pairs, 16), BucketBatchLoader(pairs[:20], 20, shuffle=False), epochs=3)
    for col in ("val_exact_match", "val_greedy_token_accuracy", "val_bleu", "val_token_accuracy"):
        assert len(hist[col]) == len(hist) and all(0 <= v <= (100 if col == "val_bleu" else 1) for v in hist[col])
    pred = decode_ids(m, [s for s, _ in pairs[:20]], 7)
    ref = sequence_scores(pred, [t for _, t in pairs[:20]])
    assert dv.last["exact_match"] == ref["exact_match"] == hist["val_exact_match"][-1]
    assert dv.last["greedy_token_accuracy"] == ref["token_accuracy"]
    # the teacher-forced val_token_accuracy of the Trainer is kept, not overwritten by the greedy one
    logs = {"val_token_accuracy": -1.0}
    dv.on_epoch_end(4, logs)
    assert sorted(logs) == ["val_bleu", "val_exact_match", "val_greedy_token_accuracy", "val_token_accuracy"]
    assert logs["val_token_accuracy"] == -1.0


def test_plot_attention(tmp_path):
    path = tmp_path / "a.png"
    plot_attention(np.full((3, 4), 0.25), list("ab c"), ["1", "2", "<eos>"], path, title="t")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match=r"plot_attention: weights \(3, 4\) do not match 2 output tokens x 4"):
        plot_attention(np.zeros((3, 4)), list("abcd"), ["1", "2"])


def test_fit_seq2seq_min_epochs_delays_early_stopping(tmp_path):
    from handgrad.seq2seq.training import fit_seq2seq

    pairs = _reverse_pairs(30)
    tv = Vocab([str(i) for i in range(4, 8)], level="word")
    runs = {}
    for min_epochs in (0, 3):
        hg.manual_seed(0)
        m = Seq2Seq(8, 8, 4, 4, attention=None)
        # lr 1e-9: nothing changes, so the monitored value never improves after epoch 1
        tr = fit_seq2seq(m, pairs, pairs[:10], tv, epochs=5, batch_size=16, lr=1e-9, max_len=6, patience=0,
                         monitor="val_loss", mode="min", min_epochs=min_epochs, out_dir=str(tmp_path / str(min_epochs)),
                         verbose=False)
        runs[min_epochs] = tr.history.meta["early_stopping"]
        assert len(tr.history) == runs[min_epochs]["stopped_epoch"]
    assert runs[0]["stopped_epoch"] == 2 and runs[3]["stopped_epoch"] == 3
    assert (tmp_path / "3" / "best.safetensors").exists()


def test_decode_validation_drops_unk_from_the_bleu_text(monkeypatch):
    import handgrad.seq2seq.training as training
    from handgrad.metrics import corpus_bleu

    tv = Vocab(["a", "b", "c", "d", "e"], level="word")
    monkeypatch.setattr(training, "decode_ids", lambda *a, **k: [[4, 3, 5, 6, 7, 8]])  # a <unk> b c d e
    dv = DecodeValidation([[4, 2]], [[4, 5, 6, 7, 8]], tv, max_len=7, references=["a b c d e"])
    dv.trainer = type("T", (), {"model": None})()
    logs = {}
    dv.on_epoch_end(1, logs)
    assert logs["val_bleu"] == pytest.approx(100.0)
    assert corpus_bleu(["a <unk> b c d e"], ["a b c d e"]) < 50  # what keeping the placeholder would give
    assert logs["val_exact_match"] == 0.0 and logs["val_greedy_token_accuracy"] == pytest.approx(1 / 6)
