"""The update steps the one Trainer drives: each against a hand-written loop, and a Trainer with each one
resuming bit-exactly; truncated-BPTT state carried and detached; Ctrl-C and bad checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

import handgrad as hg
import handgrad.functional as F
from handgrad.nn.utils import clip_grad_norm_
from handgrad.optim import SGD, Adam
from handgrad.recurrent.generation import RNNLanguageModel
from handgrad.recurrent.tbptt import detach_state
from handgrad.seq2seq.captioning import Captioner, CaptionLoader, CaptionTrainer
from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.scheduled_sampling import TeacherForcingSchedule
from handgrad.seq2seq.training import BucketBatchLoader, Seq2SeqTrainer
from handgrad.serialization import CheckpointError
from handgrad.train import (
    BPTTUpdater,
    Callback,
    ModelCheckpoint,
    StandardUpdater,
    StreamLoader,
    Trainer,
    Updater,
    Window,
)
from handgrad.train.bptt import streams
from handgrad.train.checkpoint import CheckpointNotFoundError, write_checkpoint


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def rows(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history.rows]


def _lm(seed=0, mode="LSTM"):
    hg.manual_seed(seed)
    return RNNLanguageModel(7, 5, 6, 2, mode=mode)


IDS = np.random.default_rng(0).integers(0, 7, 300)


# -- StandardUpdater --------------------------------------------------------------------------------------------
def test_standard_updater_is_the_hand_written_step():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((12, 3)).astype(np.float32), rng.integers(0, 2, 12)
    hg.manual_seed(0)
    a = hg.nn.Linear(3, 2)
    hg.manual_seed(0)
    b = hg.nn.Linear(3, 2)
    up = StandardUpdater(a, SGD(a.parameters(), lr=0.5), F.cross_entropy, grad_clip=0.1)
    opt = SGD(b.parameters(), lr=0.5)
    for _ in range(3):
        out = up.update((hg.tensor(x), hg.tensor(y)))
        opt.zero_grad()
        loss = F.cross_entropy(b(hg.tensor(x)), hg.tensor(y))
        loss.backward()
        clip_grad_norm_(list(b.parameters()), 0.1)
        opt.step()
        assert out["loss"] == float(loss.item()) and out["size"] == 12
    assert_same(weights(a), weights(b))
    assert up.iteration == 3 and up.state_dict() == {"iteration": 3}
    with pytest.raises(TypeError, match=r"StandardUpdater: expected each batch to be \(inputs, targets\)"):
        up.update((1, 2, 3))
    with pytest.raises(NotImplementedError, match="must implement loss_and_output"):
        Updater(a, SGD(a.parameters(), lr=0.1)).update(None)


# -- truncated BPTT -----------------------------------------------------------------------------------------------
def test_stream_loader_windows_resets_and_state():
    loader = StreamLoader(np.arange(100), n_streams=4, bptt=6)
    data = streams(np.arange(100), 4)
    wins = list(loader)
    assert len(wins) == len(loader) == 4  # windows at 0, 6, 12, 18 of streams of 25
    assert [w.reset for w in wins] == [True] + [False] * (len(wins) - 1)
    for k, w in enumerate(wins):
        np.testing.assert_array_equal(w.x, data[6 * k : 6 * k + 6].T)
        np.testing.assert_array_equal(w.y, data[6 * k + 1 : 6 * k + 7].T)
    # the next pass starts on new stream boundaries (a seeded shift) with a reset
    again = list(loader)
    assert again[0].reset and loader.shift != 0
    np.testing.assert_array_equal(again[0].x, streams(np.roll(np.arange(100), -loader.shift), 4)[:6].T)
    # steps_per_epoch: epochs of a fixed number of windows, the stream continuing across them; the state
    # (position, shift, generator) restores the exact continuation
    a = StreamLoader(IDS, 4, 8, steps_per_epoch=5, seed=3)
    list(a)
    saved = a.state_dict()
    cont = [w.x for _ in range(3) for w in a]
    b = StreamLoader(IDS, 4, 8, steps_per_epoch=5, seed=99)
    b.load_state_dict(saved)
    np.testing.assert_array_equal(np.stack(cont), np.stack([w.x for _ in range(3) for w in b]))
    with pytest.raises(ValueError, match="StreamLoader: 10 ids are too few for 4 streams"):
        StreamLoader(np.arange(10), 4, 6)


def _hand_tbptt(model, opt, ids, n_streams, bptt, passes, carry=True):
    """The loop every char-LM used to write: windows over the streams, the state carried and detached."""
    data = streams(ids, n_streams)
    for _ in range(passes):
        state, pos = None, 0
        while pos + bptt + 1 <= len(data):
            x, y = data[pos : pos + bptt], data[pos + 1 : pos + 1 + bptt]
            pos += bptt
            state = detach_state(state) if carry else None
            logits, state = model(hg.Tensor(np.ascontiguousarray(x.T)), state)
            loss = F.cross_entropy(logits.reshape(-1, 7), hg.Tensor(np.ascontiguousarray(y.T).reshape(-1)))
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_bptt_updater_equals_the_hand_written_loop_and_carries_a_detached_state(mode):
    m1, m2, m3 = _lm(mode=mode), _lm(mode=mode), _lm(mode=mode)
    up = BPTTUpdater(m1, Adam(m1.parameters(), lr=1e-2))
    loader = StreamLoader(IDS, 4, 8, shuffle=False)
    for _ in range(2):
        for w in loader:
            up.update(w)
    _hand_tbptt(m2, Adam(m2.parameters(), lr=1e-2), IDS, 4, 8, passes=2)
    assert_same(weights(m1), weights(m2))
    # the carried state matters: dropping it at every window trains another model
    _hand_tbptt(m3, Adam(m3.parameters(), lr=1e-2), IDS, 4, 8, passes=2, carry=False)
    assert not np.allclose(weights(m1)["decoder.weight"], weights(m3)["decoder.weight"])


def test_bptt_carried_state_is_the_state_of_the_whole_stream_and_is_detached():
    m = _lm()
    up = BPTTUpdater(m, SGD(m.parameters(), lr=0.0))  # lr 0: the weights stay, only the state moves
    wins = list(StreamLoader(IDS, 4, 8, shuffle=False))
    for w in wins:
        up.update(w)
    with hg.no_grad():  # the same 4 streams read in one go, no truncation
        whole = streams(IDS, 4)[: 8 * len(wins)]
        _, state = m(hg.Tensor(np.ascontiguousarray(whole.T)), None)
    for carried, full in zip(up.state, state):
        np.testing.assert_allclose(carried.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)
    # each window's graph ends at its start: the next step detaches what it is given
    seen = []
    orig = up.forward
    up.forward = lambda x, s: (seen.append(s), orig(x, s))[1]
    up.update(wins[1])
    assert all(t.grad_fn is None and not t.requires_grad for t in seen[0])
    up.update(wins[0])  # reset: the streams start anew
    assert seen[1] is None
    with pytest.raises(TypeError, match="BPTTUpdater: expected a Window"):
        up.update((wins[0].x, wins[0].y))


# -- Trainer + each updater: resume is bit-exact ----------------------------------------------------------------
def _resume_matches(make, loaders, tmp_path, total=4, cut=2):
    """A run of ``total`` epochs == a run stopped after ``cut`` (checkpoint) + a fresh trainer resuming it."""
    hg.manual_seed(11)
    full = make(None)
    h_full = full.fit(*loaders(), epochs=total)
    hg.manual_seed(11)
    first = make(tmp_path / "a")
    first.fit(*loaders(), epochs=cut)
    hg.manual_seed(12345)  # the generator state comes from the checkpoint
    second = make(tmp_path / "b")
    h_res = second.fit(*loaders(), epochs=total, resume=tmp_path / "a" / "last.safetensors")
    assert rows(h_res) == rows(h_full)
    assert_same(weights(second.model), weights(full.model))
    return full, second


def test_trainer_with_bptt_updater_resumes_bit_exactly(tmp_path):
    def make(out):
        m = _lm()
        cbs = [] if out is None else [ModelCheckpoint(out, monitor="loss")]
        return Trainer(updater=BPTTUpdater(m, Adam(m.parameters(), lr=1e-2), grad_clip=1.0), metrics=(),
                       callbacks=cbs, verbose=False)

    full, res = _resume_matches(make, lambda: (StreamLoader(IDS, 4, 8, steps_per_epoch=5, seed=1),), tmp_path)
    for a, b in zip(full.updater.state, res.updater.state):  # the carried state too
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _pairs(n, seed=0, V=8):
    rng = np.random.default_rng(seed)
    return [([*map(int, s), 2], [int(v) for v in s[::-1]])
            for s in (rng.integers(4, V, rng.integers(1, 5)) for _ in range(n))]


def test_trainer_with_seq2seq_updater_resumes_bit_exactly(tmp_path):
    pairs = _pairs(48)

    def make(out):
        hg.manual_seed(0)
        m = Seq2Seq(8, 8, 6, 8, attention="additive")
        cbs = [] if out is None else [ModelCheckpoint(out, monitor="val_loss")]
        # scheduled sampling draws from the generator and runs on the updater's step clock
        return Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-2), teacher_forcing=TeacherForcingSchedule(
            "linear", k=1.0, c=0.05), grad_clip=5.0, callbacks=cbs, verbose=False)

    full, res = _resume_matches(make, lambda: (BucketBatchLoader(pairs, 8, seed=2),
                                               BucketBatchLoader(pairs[:16], 16, shuffle=False)), tmp_path)
    assert res.global_step == full.global_step == 4 * 6


def test_trainer_with_caption_updater_resumes_bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((24, 3, 8, 8)).astype(np.float32)
    caps = [list(rng.integers(4, 9, rng.integers(1, 4))) for _ in range(24)]

    def make(out):
        hg.manual_seed(0)
        m = Captioner(9, 4, 6, channels=(3,), attention="additive", dropout=0.2)
        cbs = [] if out is None else [ModelCheckpoint(out, monitor="loss")]
        return CaptionTrainer(m, Adam(m.parameters(), lr=1e-2), grad_clip=5.0, callbacks=cbs, verbose=False)

    # augmentation draws from the loader's generator, dropout from handgrad's: both are in the checkpoint
    _resume_matches(make, lambda: (CaptionLoader(images, caps, 6, seed=3, augment={"max_shift": 1}),), tmp_path)


# -- Ctrl-C and bad checkpoints ---------------------------------------------------------------------------------
class _InterruptAt(Callback):
    def __init__(self, epoch, batch):
        self.at, self.epoch = (epoch, batch), 0

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def _bptt_trainer(out, callbacks=(), seed=0, **kw):
    m = _lm(seed)
    ckpt = [] if out is None else [ModelCheckpoint(out, monitor="loss")]
    return Trainer(updater=BPTTUpdater(m, Adam(m.parameters(), lr=1e-2)), metrics=(), out_dir=out,
                   callbacks=[*callbacks, *ckpt], verbose=False, **kw)


def test_ctrl_c_in_epoch_1_then_resume_finishes_uninterrupted(tmp_path, capsys):
    tr = _bptt_trainer(tmp_path, [_InterruptAt(1, 2)], resume_hint="resume: mytool --resume {path}")
    h = tr.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=5), epochs=3)
    err = capsys.readouterr().err
    assert h.meta["interrupted"] is True and tr.interrupted and tr.epoch == 0 and len(h) == 0
    assert "interrupted during epoch 1; no epoch was completed" in err and "epoch 0" not in err
    path = str(tmp_path / "interrupted.safetensors")
    assert tr.interrupt_checkpoint == path and f"resume: mytool --resume {path}" in err
    assert not os.path.exists(tmp_path / "last.safetensors")  # nothing claims a checkpoint that is not there
    # resumed from it, the run completes: not interrupted, in memory or on disk
    again = _bptt_trainer(tmp_path / "r")
    h2 = again.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=5), epochs=3, resume=path)
    assert len(h2) == 3 and not again.interrupted and "interrupted" not in h2.meta
    assert '"interrupted"' not in (tmp_path / "r" / "history.json").read_text()
    ref = _bptt_trainer(None)
    assert rows(ref.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=5), epochs=3)) == rows(h2)


def test_bad_checkpoints_raise_one_typed_error_and_change_nothing(tmp_path):
    tr = _bptt_trainer(tmp_path / "a")
    tr.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=2), epochs=1)
    good = tmp_path / "a" / "last.safetensors"
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.safetensors").write_text("hello\n")
    (tmp_path / "dir.safetensors").mkdir()
    other_model = _bptt_trainer(tmp_path / "o")
    other_model.updater.model = RNNLanguageModel(7, 5, 9, 1)
    other_model.save_checkpoint(tmp_path / "shape.safetensors")
    m = hg.nn.Linear(2, 2)
    Trainer(m, SGD(m.parameters(), lr=0.1), F.mse_loss).save_checkpoint(tmp_path / "standard.safetensors")
    named = _bptt_trainer(tmp_path / "n", run_name="other-experiment")
    named.save_checkpoint(tmp_path / "named.safetensors")
    cases = {
        "trunc": "not a readable handgrad checkpoint", "text": "not a readable handgrad checkpoint",
        "dir": "it is a directory", "shape": "checkpoint of another model or configuration",
        "standard": "was written by a StandardUpdater run; this run trains with a BPTTUpdater",
        "named": "is a checkpoint of other-experiment, not of char-lm",
    }
    fresh = _bptt_trainer(tmp_path / "f", seed=5, run_name="char-lm")
    before = weights(fresh.model)
    for name, msg in cases.items():
        with pytest.raises(CheckpointError, match=msg) as e:
            fresh.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=2), epochs=2, resume=tmp_path / f"{name}.safetensors")
        assert "\n" not in str(e.value)
        assert_same(weights(fresh.model), before)
    with pytest.raises(CheckpointNotFoundError, match="Trainer: no checkpoint at"):
        fresh.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=2), epochs=2, resume=tmp_path / "missing.safetensors")


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    write_checkpoint(path, {"a": np.arange(3)})
    with pytest.raises(TypeError):
        write_checkpoint(path, {"a": np.arange(3), "bad": object()})
    np.testing.assert_array_equal(hg.load(path)["a"], np.arange(3))  # the old checkpoint survives
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left behind


def test_window_is_a_named_batch():
    w = Window(np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64), True)
    assert w.reset and w.x.shape == (2, 3)


def test_the_loop_sends_each_batch_to_the_models_device(numpy_kernels):
    """On the strict stand-in device (which refuses NumPy arrays in its ops) truncated BPTT trains exactly as
    on the CPU: the Trainer sends each window there."""
    def run(device):
        m = _lm()
        m.to(device=device)
        tr = Trainer(updater=BPTTUpdater(m, Adam(m.parameters(), lr=1e-2), grad_clip=1.0), metrics=(),
                     verbose=False)
        h = tr.fit(StreamLoader(IDS, 4, 8, steps_per_epoch=3), epochs=2)
        return h["loss"], weights(m)

    (loss_cpu, w_cpu), (loss_strict, w_strict) = run("cpu"), run("strict")
    assert loss_strict == loss_cpu
    assert_same(w_strict, w_cpu)


def test_seq2seq_and_caption_steps_train_on_the_strict_device_as_on_the_cpu(numpy_kernels):
    rng = np.random.default_rng(0)
    images = rng.random((12, 3, 8, 8)).astype(np.float32)
    caps = [list(rng.integers(4, 9, rng.integers(1, 4))) for _ in range(12)]
    pairs = _pairs(24)

    def caption(device):
        hg.manual_seed(0)
        m = Captioner(9, 4, 6, channels=(3,), attention="additive")
        m.to(device=device)
        tr = CaptionTrainer(m, Adam(m.parameters(), lr=1e-2), grad_clip=5.0, verbose=False)
        h = tr.fit(CaptionLoader(images, caps, 6, seed=3), CaptionLoader(images, caps, 6, shuffle=False), epochs=2)
        return h["loss"], h["val_loss"], h["val_token_accuracy"]

    def seq2seq(device):
        hg.manual_seed(0)
        m = Seq2Seq(8, 8, 6, 8, attention="additive")
        m.to(device=device)
        tr = Seq2SeqTrainer(m, Adam(m.parameters(), lr=1e-2), grad_clip=5.0, verbose=False,
                            teacher_forcing=TeacherForcingSchedule("linear", k=1.0, c=0.05))
        h = tr.fit(BucketBatchLoader(pairs, 8, seed=2), BucketBatchLoader(pairs, 16, shuffle=False), epochs=2)
        return h["loss"], h["val_loss"], h["val_token_accuracy"]

    assert caption("strict") == caption("cpu")
    assert seq2seq("strict") == seq2seq("cpu")
