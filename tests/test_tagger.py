"""The (bi)directional sequence tagger: forward and backward against PyTorch with copied weights (float64),
finite differences, variable lengths, the word-boundary labels/segmentation/scores, the window loader, a
look-ahead task only the bidirectional tagger can learn, error paths and the word-boundaries experiment."""

import json

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.optim import Adam
from handgrad.recurrent.tagger import (
    IGNORE_INDEX,
    BoundaryF1,
    CharTable,
    SequenceTagger,
    WindowLoader,
    boundary_labels,
    boundary_scores,
    predict_tags,
    segment,
    tagging_loss,
)
from handgrad.train import Trainer

IDS = np.array([[3, 4, 5, 6, 2], [7, 8, 9, 0, 0]])
LENS = np.array([5, 3])
TAGS = np.array([[1, 0, 2, 0, 1], [0, 1, 1, IGNORE_INDEX, IGNORE_INDEX]])


def _tagger(bidirectional=True, cell="lstm", layers=2, head=5):
    hg.manual_seed(0)
    return SequenceTagger(10, 3, 4, 6, num_layers=layers, bidirectional=bidirectional, cell=cell,
                          head_size=head).double()


def _torch_tagger(m, cell, layers, bidirectional, head):
    params = {k: p.numpy() for k, p in m.named_parameters()}
    RNN = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    rnn = RNN(4, 6, layers, batch_first=True, bidirectional=bidirectional).double()
    emb = torch.nn.Embedding(10, 4, padding_idx=0).double()
    lin = [torch.nn.Linear(12 if bidirectional else 6, head).double(), torch.nn.Linear(head, 3).double()] if head \
        else [torch.nn.Linear(12 if bidirectional else 6, 3).double()]
    mods = {"rnn": rnn, "embedding": emb, **({"head": lin[0], "output": lin[1]} if head else {"output": lin[0]})}
    with torch.no_grad():
        for prefix, mod in mods.items():
            for name, p in mod.named_parameters():
                p.copy_(torch.tensor(params[f"{prefix}.{name}"]))

    def forward(ids, lengths):
        e = emb(torch.tensor(ids))
        packed = torch.nn.utils.rnn.pack_padded_sequence(e, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        h, _ = rnn(packed)
        h, _ = torch.nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])
        if head:
            h = torch.relu(lin[0](h))
        return lin[-1](h)

    grads = {f"{prefix}.{name}": p for prefix, mod in mods.items() for name, p in mod.named_parameters()}
    return forward, grads


@pytest.mark.parametrize("cell,layers,bidirectional,head", [("lstm", 2, True, 5), ("gru", 1, True, 0),
                                                             ("lstm", 1, False, 0)])
def test_forward_and_backward_match_pytorch_with_lengths(cell, layers, bidirectional, head):
    m = _tagger(bidirectional, cell, layers, head)
    lg = m(hg.tensor(IDS), LENS)
    loss = tagging_loss(lg, TAGS)
    loss.backward()
    forward, tparams = _torch_tagger(m, cell, layers, bidirectional, head)
    tlg = forward(IDS, LENS)
    tloss = torch.nn.functional.cross_entropy(tlg.reshape(-1, 3), torch.tensor(TAGS.reshape(-1)))
    tloss.backward()
    np.testing.assert_allclose(lg.numpy(), tlg.detach().numpy(), rtol=1e-8, atol=1e-11)
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-10)
    names = dict(m.named_parameters())
    assert set(names) == set(tparams)
    for k, p in names.items():
        np.testing.assert_allclose(p.grad.numpy(), tparams[k].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


def test_gradcheck_and_padding_does_not_leak():
    m = _tagger()

    def loss(*params):
        return tagging_loss(m(hg.tensor(IDS), LENS), TAGS)

    assert hg.gradcheck(loss, tuple(m.parameters()), directions=4)
    # what sits in the padded steps changes nothing for the real ones (the reverse pass starts at each length)
    other = IDS.copy()
    other[1, 3:] = [5, 6]
    a, b = m(hg.tensor(IDS), LENS).numpy(), m(hg.tensor(other), LENS).numpy()
    np.testing.assert_allclose(a[1, :3], b[1, :3], rtol=1e-12)
    # without lengths the bidirectional tagger does read the right context
    assert not np.allclose(m(hg.tensor(IDS)).numpy()[1, :3], m(hg.tensor(other)).numpy()[1, :3])


def test_unidirectional_tagger_is_causal():
    m = _tagger(bidirectional=False)
    other = IDS.copy()
    other[0, 3:] = [9, 9]
    a, b = m(hg.tensor(IDS)).numpy(), m(hg.tensor(other)).numpy()
    np.testing.assert_array_equal(a[0, :3], b[0, :3])
    assert not np.allclose(a[0, 3:], b[0, 3:])


# -- word boundaries ------------------------------------------------------------------------------------------
def test_boundary_labels_segment_and_scores():
    chars, tags = boundary_labels("  To be,\n or  not")
    assert chars == "Tobe,ornot"
    np.testing.assert_array_equal(tags, [1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    assert segment(chars, tags) == "To be, or not"
    pred = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])  # one false start at ',', one missed at 'or'
    s = boundary_scores(pred, tags)
    assert s == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "accuracy": 8 / 10})
    s = boundary_scores([1, 0, 0], [1, IGNORE_INDEX, 1])
    assert s == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "accuracy": 0.5})
    metric = BoundaryF1()
    metric.reset()
    logits = np.zeros((1, 10, 2))
    logits[0, np.arange(10), pred] = 1.0
    metric.update(hg.tensor(logits[:, :5]), tags[None, :5])
    metric.update(hg.tensor(logits[:, 5:]), tags[None, 5:])
    assert metric.compute() == pytest.approx(3 / 4)


def test_char_table_and_window_loader():
    t = CharTable("abca")
    assert t.itos == ["<pad>", "<unk>", "a", "b", "c"]
    np.testing.assert_array_equal(t.encode("abz"), [2, 3, 1])
    ids, tags = np.arange(1, 24), np.arange(23) % 2
    batches = list(WindowLoader(ids, tags, 5, 2, shuffle=False))
    got = np.concatenate([x.numpy()[r, :n] for (x, lens), _ in batches for r, n in enumerate(lens)])
    np.testing.assert_array_equal(got, ids)  # every character once, in order
    (x, lens), y = batches[-1]
    np.testing.assert_array_equal(lens, [3])
    np.testing.assert_array_equal(y, [[0, 1, 0, IGNORE_INDEX, IGNORE_INDEX]])
    loader = WindowLoader(ids, tags, 5, 4, shuffle=True, batches=3, seed=1)
    bs = list(loader)
    assert len(bs) == len(loader) == 3
    for x, y in bs:
        assert x.shape == (4, 5)
        np.testing.assert_array_equal(np.diff(x.numpy(), axis=1), 1)  # contiguous windows
        np.testing.assert_array_equal(y, (x.numpy() - 1) % 2)


def _lookahead(n, T, rng):
    """Tag 1 where the NEXT symbol is 2: a label that depends only on the right context."""
    x = rng.integers(2, 6, (n, T))
    y = np.zeros((n, T), np.int64)
    y[:, :-1] = x[:, 1:] == 2
    return x, y


def test_only_the_bidirectional_tagger_learns_a_right_context_task():
    rng = np.random.default_rng(0)
    x, y = _lookahead(256, 10, rng)
    xt, yt = _lookahead(200, 10, rng)
    acc = {}
    for bi in (False, True):
        hg.manual_seed(0)
        m = SequenceTagger(6, 2, 4, 8, bidirectional=bi)
        tr = Trainer(m, Adam(m.parameters(), lr=2e-2), tagging_loss, metrics=(), verbose=False)
        loader = [(hg.tensor(x[i : i + 32]), y[i : i + 32]) for i in range(0, 256, 32)]
        h = tr.fit(loader, epochs=6)
        assert h["loss"][-1] < h["loss"][0]
        acc[bi] = boundary_scores(predict_tags(m, xt), yt)["accuracy"]
    assert acc[True] > 0.97
    assert acc[False] < 0.8  # the next symbol is a coin flip to a model that has not seen it (3/4 are not 2)


# -- errors ---------------------------------------------------------------------------------------------------
def test_errors():
    m = _tagger()
    with pytest.raises(ValueError, match=r"SequenceTagger: expected integer ids \(B, T\), got shape \(5,\)"):
        m(hg.tensor(IDS[0]))
    with pytest.raises(ValueError, match=r"SequenceTagger: expected integer ids.*float64"):
        m(hg.tensor(IDS.astype(float)))
    with pytest.raises(ValueError, match="cell must be"):
        SequenceTagger(5, 2, cell="rnn")
    with pytest.raises(ValueError, match="num_tags must be >= 2"):
        SequenceTagger(5, 1)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        SequenceTagger(0, 2)
    with pytest.raises(ValueError, match="head_size must be >= 0"):
        SequenceTagger(5, 2, head_size=-1)
    with pytest.raises(ValueError, match=r"tagging_loss: logits \(2, 5, 3\) do not match targets \(2, 4\)"):
        tagging_loss(m(hg.tensor(IDS)), TAGS[:, :4])
    with pytest.raises(ValueError, match="segment: 3 characters but 2 tags"):
        segment("abc", [1, 0])
    with pytest.raises(ValueError, match="boundary_scores: 2 predictions for 3 tags"):
        boundary_scores([1, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="WindowLoader: 3 ids but 2 tags"):
        WindowLoader(np.arange(3), np.arange(2), 2, 1)
    with pytest.raises(ValueError, match="at least one window"):
        WindowLoader(np.arange(3), np.arange(3), 5, 1)


# -- the experiment -------------------------------------------------------------------------------------------
def test_word_boundaries_quick_run(tmp_path):
    from handgrad.cli.main import main

    out = tmp_path / "wb"
    assert main(["run", "word-boundaries", "--quick", "--no-progress", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    res = r.get("results", r)
    for name in ("unidirectional", "bidirectional"):
        assert 0.0 <= res[name]["test_f1"] <= 1.0 and res[name]["epochs_run"] >= 1
    assert res["baseline_all_zeros_accuracy"] == pytest.approx(1 - res["test_boundary_rate"])
    sample = res["sample"]
    assert sample["truth"].replace(" ", "") == sample["input"] == sample["bidirectional"].replace(" ", "")
    data = tmp_path / "tiny.txt"
    data.write_text("to be or not to be " * 300)
    assert main(["run", "word-boundaries", "--quick", "--models", "bi", "--data", str(data), "--val-chars", "100",
                 "--test-chars", "200", "--out", str(tmp_path / "wb2")]) == 0
    assert main(["run", "word-boundaries", "--quick", "--data", str(tmp_path / "missing.txt"),
                 "--out", str(out)]) == 2
    assert main(["run", "word-boundaries", "--quick", "--test-chars", "100000000", "--out", str(out)]) == 2
    assert main(["run", "word-boundaries", "--quick", "--hidden", "0", "--out", str(out)]) == 2
