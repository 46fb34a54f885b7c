"""Short trainings on the test device (``tests/_device.py``): LeNet, an LSTM language model with a carried
state, Seq2Seq (train and decode) and the Trainer + DataLoader loop give the CPU run's numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _device import ON_DEVICE, TEST_DEVICE, assert_close_to_cpu

import handgrad as hg
import handgrad.functional as F
import handgrad.nn as nn
from handgrad.engine import backend

needs_device = pytest.mark.skipif(not ON_DEVICE, reason="HANDGRAD_TEST_DEVICE=cpu: no device pass")




# -- short training runs on the test device -------------------------------------------------------------------
def _train(make: Callable[[], nn.Module], step: Callable[[nn.Module, str], hg.Tensor], dev: str,
           steps: int = 3, opt: str = "adam") -> tuple[list[float], dict[str, np.ndarray]]:
    hg.manual_seed(0)
    model = make().to(dev)
    optim = hg.optim.Adam(model.parameters(), lr=1e-2) if opt == "adam" else \
        hg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        optim.zero_grad()
        loss = step(model, dev)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(float(loss.item()))
    return losses, model.state_dict()


def _same_training(make: Callable[[], nn.Module], step: Callable[[nn.Module, str], hg.Tensor], **kw: Any) -> None:
    c_losses, c_state = _train(make, step, "cpu", **kw)
    d_losses, d_state = _train(make, step, TEST_DEVICE, **kw)
    np.testing.assert_allclose(d_losses, c_losses, rtol=1e-5 if TEST_DEVICE == "strict" else 1e-4)
    for k in c_state:
        assert_close_to_cpu(d_state[k], c_state[k], k, rtol=1e-4, atol=1e-6)
    assert c_losses[-1] < c_losses[0]


@needs_device
def test_lenet_trains_on_device() -> None:
    from handgrad.architectures.lenet import LeNet

    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        xb, yb = backend.send((hg.tensor(x), hg.tensor(y)), dev)  # what the training loop does per batch
        return F.cross_entropy(model(xb), yb)

    _same_training(LeNet, step, opt="sgd")


@needs_device
def test_lstm_language_model_trains_on_device() -> None:
    """Truncated BPTT with a carried (detached) state, as the char-LM does."""
    V, T, B = 11, 6, 3
    ids = np.random.default_rng(1).integers(0, V, (T + 1, B))

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(V, 8), nn.LSTM(8, 12, 2), nn.Linear(12, V)
            self.state: Any = None

        def forward(self, x: hg.Tensor) -> hg.Tensor:
            y, state = self.rnn(F.dropout(self.emb(x), 0.0), self.state)
            self.state = tuple(s.detach() for s in state)
            return self.out(y)

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        x, t = hg.tensor(ids[:-1], device=dev), hg.tensor(ids[1:], device=dev)
        return F.cross_entropy(model(x).reshape(T * B, V), t.reshape(-1))

    _same_training(LM, step)


@needs_device
def test_seq2seq_trains_and_decodes_on_device(numpy_kernels) -> None:
    from handgrad.seq2seq.decoding import beam_search, greedy_decode
    from handgrad.seq2seq.model import Seq2Seq

    rng = np.random.default_rng(2)
    src = rng.integers(4, 12, (3, 5))
    src[2, 3:] = 0  # padding (pad id 0)
    lengths = np.array([5, 5, 3])
    tgt = rng.integers(4, 13, (3, 6))

    def make() -> nn.Module:
        return Seq2Seq(12, 13, embedding_size=8, hidden_size=8)

    def step(model: nn.Module, dev: str) -> hg.Tensor:
        logits, _ = model(hg.tensor(src, device=dev), lengths, hg.tensor(tgt[:, :-1], device=dev))
        return F.cross_entropy(logits.reshape(-1, 13), hg.tensor(tgt[:, 1:], device=dev).reshape(-1), ignore_index=0)

    _same_training(make, step)
    outs = {}
    for dev in ("cpu", TEST_DEVICE):
        hg.manual_seed(0)
        model = make().to(dev).eval()
        with hg.no_grad():
            stepf, st, select = model.decoder_step_fn(hg.tensor(src, device=dev), lengths)
            greedy = greedy_decode(stepf, st, 3, 1, 2, 7)
            stepf, st, select = model.decoder_step_fn(hg.tensor(src, device=dev), lengths)
            beams = beam_search(stepf, st, 3, 1, 2, 7, beam_size=2, select=select)
        outs[dev] = (greedy, beams)
    assert outs[TEST_DEVICE][0] == outs["cpu"][0]
    assert str(outs[TEST_DEVICE][1]) == str(outs["cpu"][1])
    from handgrad.seq2seq.training import attention_weights, decode_ids

    res = {}
    for dev in ("cpu", TEST_DEVICE):  # the library's own host-side decoding helpers, fed host data
        hg.manual_seed(0)
        model = make().to(dev)
        res[dev] = (decode_ids(model, [[5, 6, 7], [8, 9]], 6, beam_size=2), attention_weights(model, [5, 6, 7], [4]))
    assert res[TEST_DEVICE][0] == res["cpu"][0]
    assert type(res[TEST_DEVICE][1]) is np.ndarray
    np.testing.assert_allclose(res[TEST_DEVICE][1], res["cpu"][1], rtol=1e-5)


@needs_device
def test_trainer_sends_batches_to_the_model_device() -> None:
    """``Trainer`` + ``DataLoader`` with the model on the test device: the loop moves each host batch there
    (``backend.send``) and gives the CPU run's history."""
    from handgrad.data import DataLoader, TensorDataset
    from handgrad.train import Trainer

    x = np.random.default_rng(3).standard_normal((24, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    histories = {}
    for dev in ("cpu", TEST_DEVICE):
        hg.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).to(dev)
        loader = DataLoader(TensorDataset(hg.tensor(x), hg.tensor(y)), batch_size=8, shuffle=True, seed=1)
        trainer = Trainer(model, hg.optim.Adam(model.parameters(), lr=1e-2), F.cross_entropy, verbose=False,
                          progress=False)
        hist = trainer.fit(loader, loader, epochs=2)
        histories[dev] = [hist[k] for k in ("loss", "val_loss", "val_accuracy")]
        assert all(p.device == dev for p in model.parameters())
    assert np.allclose(np.asarray(histories[TEST_DEVICE], float), np.asarray(histories["cpu"], float), rtol=1e-5)
