"""The encoder-decoder: teacher-forced (fused) and step-by-step paths agree, gradients are right,
padding never reaches the loss or the attention, and decoding drives it."""

import numpy as np
import pytest

import handgrad as hg
import handgrad.functional as F
from handgrad.seq2seq.decoding import beam_search, greedy_decode
from handgrad.seq2seq.model import Seq2Seq

SRC = np.array([[4, 5, 6, 2], [7, 8, 2, 0]])
LENS = np.array([4, 3])
TGT_IN = np.array([[1, 4, 5], [1, 6, 0]])
TGT_OUT = np.array([[4, 5, 2], [6, 2, 0]])


def _model(attention="additive", cell="lstm", layers=2, bidirectional=True):
    hg.manual_seed(0)
    return Seq2Seq(10, 12, 6, 8, num_layers=layers, attention=attention, cell=cell,
                   bidirectional=bidirectional).double()


@pytest.mark.parametrize("attention,cell", [("additive", "lstm"), ("general", "gru"), ("dot", "lstm"), (None, "gru")])
def test_fused_and_stepwise_decoders_agree(attention, cell):
    m = _model(attention, cell, bidirectional=attention != "dot")
    lg, a = m(hg.tensor(SRC), LENS, hg.tensor(TGT_IN))
    lg2, a2 = m(hg.tensor(SRC), LENS, hg.tensor(TGT_IN), teacher_forcing=1 - 1e-15)
    np.testing.assert_allclose(lg.numpy(), lg2.numpy(), rtol=1e-10, atol=1e-12)
    if attention is not None:
        assert a.shape == (2, 3, 4)
        assert (a.numpy()[1, :, 3] == 0).all()  # the padded source position gets no attention
        np.testing.assert_allclose(a.numpy(), a2.numpy(), rtol=1e-10, atol=1e-12)


def test_whole_model_gradcheck_and_padding_excluded_from_loss():
    m = _model("additive", "lstm", layers=1)
    src = hg.tensor(SRC)

    def loss_of(*params):
        lg, _ = m(src, LENS, hg.tensor(TGT_IN))
        return F.cross_entropy(lg.reshape(-1, 12), hg.tensor(TGT_OUT.reshape(-1)), ignore_index=0)

    params = tuple(m.parameters())
    assert hg.gradcheck(loss_of, params, directions=4)
    # changing what the model predicts at a padded target position changes nothing
    lg, _ = m(src, LENS, hg.tensor(TGT_IN))
    base = F.cross_entropy(lg.reshape(-1, 12), hg.tensor(TGT_OUT.reshape(-1)), ignore_index=0).item()
    shifted = lg.numpy().copy()
    shifted[1, 2] += 5.0
    again = F.cross_entropy(hg.tensor(shifted.reshape(-1, 12)), hg.tensor(TGT_OUT.reshape(-1)), ignore_index=0)
    assert again.item() == pytest.approx(base)


def test_decoding_drives_the_model():
    m = _model()
    with hg.no_grad():
        step, state, select = m.decoder_step_fn(hg.tensor(SRC), LENS)
        greedy = greedy_decode(step, state, 2, 1, 2, 5)
        beams = beam_search(step, state, 2, 1, 2, 5, beam_size=1, select=select)
    assert [b[0].tokens for b in beams] == greedy


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq(5, 5, attention="luong")
    with pytest.raises(ValueError, match="bidirectional=False"):
        Seq2Seq(5, 5, attention="dot")
    with pytest.raises(ValueError, match="cell"):
        Seq2Seq(5, 5, cell="rnn")
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        _model().encode(hg.tensor(SRC[0]), LENS)
