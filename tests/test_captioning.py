"""Image captioning: the Captioner's gradients (finite differences and PyTorch with copied weights), the
fused teacher-forced decoder against step-by-step decoding, greedy vs beam search, augmentation, scores,
a tiny training run, error paths and the caption-emoji experiment end to end (--quick)."""

import json
import os

import numpy as np
import pytest
import torch

import handgrad as hg
from handgrad.optim import Adam
from handgrad.seq2seq.captioning import (
    CaptionBatch,
    Captioner,
    CaptionLoader,
    CaptionTrainer,
    augment_images,
    build_caption_vocab,
    caption_attention,
    caption_scores,
    decode_caption,
    decode_captions,
    encode_caption,
    images_to_float,
    make_caption_batch,
)
from handgrad.seq2seq.decoding import beam_search, greedy_decode
from handgrad.seq2seq.training import sequence_cross_entropy

TGT_IN = np.array([[1, 4, 5, 6], [1, 7, 0, 0], [1, 8, 4, 0]])
TGT_OUT = np.array([[4, 5, 6, 2], [7, 2, 0, 0], [8, 4, 2, 0]])


def _images(b=3, side=8, seed=0):
    return hg.tensor(np.random.default_rng(seed).random((b, 3, side, side)))


def _model(attention="additive", cell="lstm", layers=1, vocab=9, image_vector="mean"):
    hg.manual_seed(0)
    return Captioner(vocab, 5, 6, channels=(3, 4), num_layers=layers, attention=attention, cell=cell,
                     image_vector=image_vector, image_size=8).double()


# -- gradients ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell,layers,vector",
                         [("additive", "lstm", 1, "mean"), ("general", "gru", 2, "mean"), (None, "lstm", 2, "flatten")])
def test_gradcheck_whole_captioner(attention, cell, layers, vector):
    m = _model(attention, cell, layers, image_vector=vector)
    x = _images()
    x.requires_grad = True

    def loss(x, *params):
        lg, _ = m(x, TGT_IN)
        return sequence_cross_entropy(lg, TGT_OUT)

    assert hg.gradcheck(loss, (x, *m.parameters()), directions=3)


def _torch_captioner(m, vector="mean"):
    """The same computation in PyTorch (torch.nn.LSTM as the decoder), with the handgrad model's weights."""
    params = {k: p.numpy() for k, p in m.named_parameters()}
    sd = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
          if not k.startswith("decoder.")}
    rnn = torch.nn.LSTM(5, 6, 1, batch_first=True).double()
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p.copy_(torch.tensor(params[f"decoder.{name}"]))
            sd[f"decoder.{name}"] = p

    def forward(x, tgt_in):
        f = x
        for i in range(2):
            f = torch.nn.functional.conv2d(f, sd[f"encoder.body.{4 * i}.weight"], padding=1)
            f = torch.nn.functional.batch_norm(f, None, None, sd[f"encoder.body.{4 * i + 1}.weight"],
                                               sd[f"encoder.body.{4 * i + 1}.bias"], training=True)
            f = torch.nn.functional.max_pool2d(torch.relu(f), 2)
        B, C = f.shape[:2]
        keys = f.reshape(B, C, -1).permute(0, 2, 1)
        v = keys.mean(1) if vector == "mean" else keys.reshape(B, -1)
        h0 = torch.tanh(v @ sd["init_h.weight"].T + sd["init_h.bias"])[None]
        c0 = torch.tanh(v @ sd["init_c.weight"].T + sd["init_c.bias"])[None]
        emb = torch.nn.functional.embedding(torch.tensor(tgt_in), sd["embedding.weight"], padding_idx=0)
        s, _ = rnn(emb, (h0, c0))
        pk = keys @ sd["attention.W_k"] + sd["attention.b"]
        u = torch.tanh(pk[:, None] + (s @ sd["attention.W_q"])[:, :, None])
        a = torch.softmax(u @ sd["attention.v"], dim=-1)
        c = a @ keys
        o = torch.tanh(torch.cat([s, c], -1) @ sd["combine.weight"].T + sd["combine.bias"])
        return o @ sd["output.weight"].T + sd["output.bias"], a

    return forward, sd


@pytest.mark.parametrize("vector", ["mean", "flatten"])
def test_forward_and_backward_match_pytorch(vector):
    m = _model("additive", "lstm", 1, image_vector=vector)
    x = np.random.default_rng(1).random((3, 3, 8, 8))
    lg, a = m(hg.tensor(x), TGT_IN)
    loss = sequence_cross_entropy(lg, TGT_OUT)
    loss.backward()
    forward, sd = _torch_captioner(m, vector)
    tlg, ta = forward(torch.tensor(x), TGT_IN)
    tloss = torch.nn.functional.cross_entropy(tlg.reshape(-1, 9), torch.tensor(TGT_OUT.reshape(-1)), ignore_index=0)
    tloss.backward()
    np.testing.assert_allclose(lg.numpy(), tlg.detach().numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.numpy(), ta.detach().numpy(), rtol=1e-8, atol=1e-10)
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-10)
    names = dict(m.named_parameters())
    assert set(names) == set(sd)
    for k, p in names.items():
        np.testing.assert_allclose(p.grad.numpy(), sd[k].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


# -- decoding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell,layers,vector",
                         [("additive", "lstm", 2, "flatten"), ("general", "gru", 1, "mean"), (None, "lstm", 1, "mean")])
def test_teacher_forced_and_step_by_step_agree(attention, cell, layers, vector):
    m = _model(attention, cell, layers, image_vector=vector).eval()
    x = _images()
    lg, a = m(x, TGT_IN)
    z = lg.numpy() - lg.numpy().max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    with hg.no_grad():
        step, st, _ = m.decoder_step_fn(x)
        for t in range(TGT_IN.shape[1]):
            lp, st = step(TGT_IN[:, t], st)
            np.testing.assert_allclose(lp, logp[:, t], rtol=1e-10, atol=1e-12)
    if attention is not None:
        assert a.shape == (3, 4, 4)  # 8x8 image, two poolings: a 2x2 grid
        np.testing.assert_allclose(np.stack(st["attn"], 1), a.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.numpy().sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("attention", ["additive", None])
def test_beam_width_one_is_greedy_and_a_full_beam_is_the_exact_best_caption(attention):
    V, L = 6, 3
    m = _model(attention, "lstm", 1, vocab=V).eval()
    x = _images(2, seed=3)
    with hg.no_grad():
        step, st, select = m.decoder_step_fn(x)
        greedy = greedy_decode(step, st, 2, 1, 2, L)
        one = beam_search(step, st, 2, 1, 2, L, beam_size=1, select=select)
        full = beam_search(step, st, 2, 1, 2, L, beam_size=V ** L, select=select)
    assert [h[0].tokens for h in one] == greedy
    assert decode_captions(m, x.numpy(), L) == greedy
    assert decode_captions(m, x.numpy(), L, beam_size=V ** L) == [h[0].tokens for h in full]
    # exhaustive search: log p of every output sequence up to its first <eos> (or cut at L), teacher-forced
    seqs = np.array(np.meshgrid(*[np.arange(V)] * L, indexing="ij")).reshape(L, -1).T  # (V^L, L)
    for b in range(2):
        xb = hg.tensor(np.repeat(x.numpy()[b : b + 1], len(seqs), 0))
        lg, _ = m(xb, np.concatenate([np.ones((len(seqs), 1), np.int64), seqs[:, :-1]], 1))
        z = lg.numpy()
        logp = z - z.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        step_lp = np.take_along_axis(logp, seqs[..., None], -1)[..., 0]  # (V^L, L)
        best = -np.inf
        for s, lp in zip(seqs, step_lp):
            n = list(s).index(2) + 1 if 2 in s else L
            best = max(best, lp[:n].sum())
        assert full[b][0].log_prob == pytest.approx(best, rel=1e-10)
        assert one[b][0].log_prob <= best + 1e-12


def test_caption_attention_is_the_greedy_decodings_attention():
    m = _model("additive").eval()
    x = _images(1)
    with hg.no_grad():
        step, st, _ = m.decoder_step_fn(x)
        out = greedy_decode(step, st, 1, 1, 2, 5)[0]
        tokens = np.array([1])
        for _ in range(len(out) + 1):
            lp, st = step(tokens, st)
            tokens = lp.argmax(1)
    w = caption_attention(m, x.numpy()[0], out)
    np.testing.assert_allclose(w, np.concatenate(st["attn"])[: len(out) + 1], rtol=1e-10)
    assert w.shape == (len(out) + 1, 4)


# -- data, augmentation, scores --------------------------------------------------------------------------------
def test_caption_vocab_encode_decode_and_batches():
    v = build_caption_vocab(["red heart", "broken heart", "red apple"])
    assert v.itos[:6] == ["<pad>", "<bos>", "<eos>", "<unk>", "heart", "red"]
    ids = encode_caption("red right-pointing heart", v)
    assert ids == [5, 3, 4]
    assert decode_caption([*ids, 2, 4], v) == "red <unk> heart"
    b = make_caption_batch(np.zeros((2, 3, 4, 4)), [[4, 5], [6]])
    np.testing.assert_array_equal(make_caption_batch(np.zeros((1, 3, 4, 4)), [[3, 5]], ignore_unknown=True).tgt_out,
                                  [[0, 5, 2]])  # <unk> targets left out of the loss; inputs keep them
    np.testing.assert_array_equal(b.tgt_in, [[1, 4, 5], [1, 6, 0]])
    np.testing.assert_array_equal(b.tgt_out, [[4, 5, 2], [6, 2, 0]])
    x = images_to_float(np.full((1, 2, 2, 3), 255, np.uint8))
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32 and np.all(x == 1.0)


def test_augment_shift_fills_white_and_jitter_stays_in_range():
    x = np.random.default_rng(0).random((5, 3, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(1)
    shifts = np.random.default_rng(1).integers(-2, 3, size=(5, 2))
    y = augment_images(x, rng, max_shift=2, jitter=0.0)
    for i, (dy, dx) in enumerate(shifts):
        rolled = np.roll(x[i], (dy, dx), axis=(1, 2))
        inside = np.ones((6, 6), bool)
        inside[: max(dy, 0)] = inside[6 + min(dy, 0):] = False
        inside[:, : max(dx, 0)] = inside[:, 6 + min(dx, 0):] = False
        np.testing.assert_array_equal(y[i][:, inside], rolled[:, inside])
        assert np.all(y[i][:, ~inside] == 1.0)
    z = augment_images(x, np.random.default_rng(2), max_shift=0, jitter=0.5)
    assert z.min() >= 0 and z.max() <= 1 and not np.allclose(z, x)
    np.testing.assert_array_equal(z, augment_images(x, np.random.default_rng(2), max_shift=0, jitter=0.5))
    np.testing.assert_array_equal(augment_images(x, rng, max_shift=0, jitter=0.0), x)


def test_caption_scores():
    s = caption_scores(["red heart", "a b c d e"], ["red heart", "a b c d e"])
    assert s["bleu"] == pytest.approx(100.0) and s["exact_match"] == 1.0
    s = caption_scores(["red heart", "blue"], ["red heart", "blue heart"])
    assert s["exact_match"] == 0.5
    assert s["word_precision"] == 1.0 and s["word_recall"] == pytest.approx(3 / 4)


# -- training --------------------------------------------------------------------------------------------------
def _toy_data(n=48, side=8):
    """Colour squares in one of four corners: caption '<colour> <corner>'."""
    rng = np.random.default_rng(0)
    colours = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
    corners = {"top": (0, 0), "bottom": (4, 4)}
    imgs, caps = np.ones((n, 3, side, side), np.float32), []
    for i in range(n):
        c, k = rng.choice(list(colours)), rng.choice(list(corners))
        y, x = corners[k]
        imgs[i, :, y:y + 4, x:x + 4] = np.array(colours[c], np.float32)[:, None, None]
        caps.append(f"{c} {k}")
    return imgs, caps


def test_tiny_captioning_run_learns():
    imgs, caps = _toy_data()
    v = build_caption_vocab(caps)
    ids = [encode_caption(c, v) for c in caps]
    hg.manual_seed(0)
    m = Captioner(len(v), 8, 16, channels=(4, 8), attention="additive")
    tr = CaptionTrainer(m, Adam(m.parameters(), lr=1e-2), verbose=False)
    h = tr.fit(CaptionLoader(imgs, ids, 16, seed=0), epochs=20)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    pred = [decode_caption(p, v) for p in decode_captions(m, imgs, 4)]
    assert caption_scores(pred, caps)["exact_match"] >= 0.9


# -- errors ----------------------------------------------------------------------------------------------------
def test_errors_name_the_model_and_shapes():
    m = _model()
    with pytest.raises(ValueError, match=r"Captioner: expected images \(B, 3, H, W\) with H, W >= 4.*\(3, 8, 8\)"):
        m(hg.tensor(np.zeros((3, 8, 8))), TGT_IN)
    with pytest.raises(ValueError, match=r"Captioner: expected images .*\(3, 1, 8, 8\)"):
        m(hg.tensor(np.zeros((3, 1, 8, 8))), TGT_IN)
    with pytest.raises(ValueError, match=r"H, W >= 4.*\(3, 3, 2, 8\)"):
        m(hg.tensor(np.zeros((3, 3, 2, 8))), TGT_IN)
    with pytest.raises(TypeError, match="Captioner: images must be a Tensor"):
        m.encode(np.zeros((3, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"same B.*\(2, 3, 8, 8\) and \(3, 4\)"):
        m(_images(2), TGT_IN)
    with pytest.raises(ValueError, match="attention must be one of"):
        Captioner(9, attention="dot")
    with pytest.raises(ValueError, match="cell must be"):
        Captioner(9, cell="rnn")
    with pytest.raises(ValueError, match="vocab_size 4"):
        Captioner(4)
    with pytest.raises(ValueError, match="image_vector must be 'mean' or 'flatten'"):
        Captioner(9, image_vector="max")
    with pytest.raises(ValueError, match="image_vector='flatten' needs image_size >= 8"):
        Captioner(9, channels=(2, 2, 2), image_vector="flatten")
    with pytest.raises(ValueError, match=r"built for 8x8 images \(a 2x2 grid\), got images \(3, 3, 12, 12\)"):
        _model(image_vector="flatten")(_images(side=12), TGT_IN)
    with pytest.raises(ValueError, match="CNNEncoder: channels"):
        Captioner(9, channels=())
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        decode_captions(m, np.zeros((1, 3, 8, 8)), 3, beam_size=0)
    with pytest.raises(ValueError, match="caption_attention: the model has no attention"):
        caption_attention(_model(None), np.zeros((3, 8, 8)), [4])
    with pytest.raises(ValueError, match=r"images_to_float: expected images \(N, H, W, 3\), got shape \(2, 2\)"):
        images_to_float(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="make_caption_batch: 2 images but 1 captions"):
        make_caption_batch(np.zeros((2, 3, 4, 4)), [[4]])
    with pytest.raises(ValueError, match="CaptionLoader: need as many images as captions"):
        CaptionLoader(np.zeros((2, 3, 4, 4)), [[4]], 2)
    with pytest.raises(ValueError, match="CaptionLoader: batch_size"):
        CaptionLoader(np.zeros((1, 3, 4, 4)), [[4]], 0)
    with pytest.raises(ValueError, match="caption_scores: 1 hypotheses for 2"):
        caption_scores(["a"], ["a", "b"])
    tr = CaptionTrainer(m, Adam(m.parameters()), verbose=False)
    with pytest.raises(TypeError, match="CaptionUpdater: expected a CaptionBatch"):
        tr.updater.update((np.zeros(1), np.zeros(1)))
    assert isinstance(make_caption_batch(np.zeros((1, 3, 4, 4)), [[4]]), CaptionBatch)


# -- the experiment --------------------------------------------------------------------------------------------
def _has_font():
    from handgrad.data.emoji import FONT_PATHS

    return any(os.path.exists(p) for p in FONT_PATHS) or bool(os.environ.get("HANDGRAD_EMOJI_FONT"))


@pytest.mark.skipif(not _has_font(), reason="needs fonts-noto-color-emoji")
def test_caption_emoji_quick_run(tmp_path):
    from handgrad.cli.main import main

    out = tmp_path / "cap"
    assert main(["run", "caption-emoji", "--quick", "--no-progress", "--limit", "60", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    res = r.get("results", r)
    assert res["n_train"] + res["n_val"] + res["n_test"] == 60
    for name in ("no_attention", "attention"):
        assert 0.0 <= res[name]["test_bleu_greedy"] <= 100.0 and res[name]["epochs_run"] >= 1
    assert 0.0 <= res["nearest_neighbour"]["bleu"] <= 100.0
    assert (out / "captions_test.png").stat().st_size > 1000
    assert (out / "attention_maps.png").stat().st_size > 1000
    assert main(["run", "caption-emoji", "--quick", "--channels", "a,b", "--out", str(out)]) == 2
    assert main(["run", "caption-emoji", "--quick", "--val-fraction", "0.6", "--test-fraction", "0.5",
                 "--out", str(out)]) == 2
