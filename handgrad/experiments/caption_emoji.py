"""``handgrad run caption-emoji``: caption colour emoji with their Unicode names ("hamster face"), with and
without soft attention over the CNN's feature grid.

Data: :func:`handgrad.data.emoji.load_emoji` (about 1,367 images rendered from Noto Color Emoji, captions
from ``unicodedata.name``), split BY IMAGE with a seeded permutation into train / validation / test (80/10/10
by default). Every image has exactly one caption and no two captions are the same, so a test caption is never
seen in training; but captions share words ("face", "with", "symbol", "heart", "arrow", "clock"), and a
test caption can be right only with words that occur in training captions (the vocabulary is the training
words; the share of test words outside it is reported as ``test_oov_word_rate``).

Models (:class:`~handgrad.seq2seq.captioning.Captioner`): a 3-block CNN (conv-BN-ReLU-maxpool; a 32x32 image
becomes a 4x4 grid of feature vectors), its mean vector initialises an LSTM decoder's state (Show and Tell);
the attention model also attends over the 16 grid vectors at every word (additive score, Show, Attend and
Tell). Teacher forcing, Adam with a cosine learning-rate decay, gradient clipping, dropout, random shifts and
brightness/contrast jitter of the training images; the weights of the best validation epoch are restored.

Model selection: early stopping on the validation loss over the words the vocabulary knows (the held-out
``<unk>`` targets are left out: they cannot be predicted, and their loss only grows as the model gets
confident). Selecting on validation BLEU instead (``--monitor val_bleu``) tends to pick an early, collapsed
model: a handful of generic captions ("face with", "smiling face with ...") collect n-gram matches over the
many face emoji, while the captions of everything else are wrong.

Reported (``results.json``): test corpus BLEU (sacrebleu's definition, :func:`handgrad.metrics.corpus_bleu`),
exact-match rate and word precision/recall, for greedy and beam-search captions of each model, next to a
nearest-neighbour baseline (the caption of the training image closest in pixels). ``captions_test.png``
shows test images with both models' captions and the truth; ``attention_maps.png`` where the attention model
looked for each word.
"""

from __future__ import annotations

import os
import textwrap
import time
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy

import handgrad as hg
from handgrad.data.emoji import load_emoji
from handgrad.errors import ExperimentError
from handgrad.optim import Adam
from handgrad.optim.lr_scheduler import CosineAnnealingLR
from handgrad.seq2seq.captioning import (
    Captioner,
    CaptionLoader,
    CaptionTrainer,
    CaptionValidation,
    build_caption_vocab,
    caption_attention,
    caption_scores,
    decode_caption,
    decode_captions,
    encode_caption,
    images_to_float,
)
from handgrad.train import EarlyStopping
from handgrad.train.plots import plot_history

EXPERIMENT = "caption-emoji"


def add_arguments(p: Any) -> None:
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--channels", default=None, help="CNN channels per block, comma-separated (default 32,64,128)")
    p.add_argument("--embedding", type=int, default=None, help="word embedding size (default 64)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden size (default 128)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout (default 0.3)")
    p.add_argument("--image-vector", default="mean", choices=["mean", "flatten"],
                   help="what initialises the decoder: the mean of the feature grid (default) or the whole grid")
    p.add_argument("--models", default="both", choices=["both", "none", "attention"],
                   help="train without attention, with attention, or both (default)")
    p.add_argument("--beam", type=int, default=3, help="beam size for the beam-search scores (default 3)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--monitor", default="val_loss", choices=["val_loss", "val_bleu"],
                   help="early stopping on the validation loss over in-vocabulary words (default) or on the "
                        "validation BLEU of greedy captions")
    p.add_argument("--max-shift", type=int, default=2, help="augmentation: random shift in pixels (0 = none)")
    p.add_argument("--jitter", type=float, default=0.2, help="augmentation: brightness/contrast jitter (0 = none)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of images for validation (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of images for the test (default 0.1)")
    p.add_argument("--limit", type=int, default=None, help="use only this many images (default all)")
    p.add_argument("--grid", type=int, default=None, help="test images in captions_test.png (default 30)")


def _split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[numpy.ndarray, ...]:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ExperimentError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be in "
                              "(0, 1) and leave images for training")
    perm = numpy.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise ExperimentError(f"{n} images leave none for training")
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def _nearest_neighbour(train_x: numpy.ndarray, test_x: numpy.ndarray) -> numpy.ndarray:
    """Index of the training image closest to each test image in Euclidean pixel distance."""
    a = train_x.reshape(len(train_x), -1).astype(numpy.float64)
    b = test_x.reshape(len(test_x), -1).astype(numpy.float64)
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]
    return d.argmin(axis=1)


def _wrap(text: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(text, width)) or "(empty)"


def _caption_grid(images: numpy.ndarray, rows: list[tuple[str, list[str]]], truth: list[str], path: str) -> None:
    """Save a grid of images with each model's caption and the true one under them."""

    matplotlib.use("Agg", force=False)

    n = len(images)
    cols = min(6, n)  # a short grid is not padded with empty panels
    r = (n + cols - 1) // cols
    # constrained layout makes room between the rows for each row's captions
    fig, axes = plt.subplots(r, cols, figsize=(cols * 2.6, r * (2.6 + 0.45 * len(rows))), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i])
        lines = [f"{name}: {_wrap(c[i], 26)}" for name, c in rows] + [f"TRUE: {_wrap(truth[i], 26)}"]
        ok = [c[i] == truth[i] for _, c in rows]
        ax.set_title("\n".join(lines), fontsize=6.5, loc="left", color="green" if any(ok) else "black")
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)  # the page grows to hold every caption
    plt.close(fig)


def _attention_maps(model: Any, images_f: numpy.ndarray, images_u8: numpy.ndarray, captions: list[list[int]],
                    vocab: Any, path: str) -> None:
    """For each image: the image, then the attention grid (upsampled over the image) for every output word."""

    matplotlib.use("Agg", force=False)

    maps = [caption_attention(model, x, c)[:8] for x, c in zip(images_f, captions)]  # at most 8 words a row
    cols = 1 + max(len(m) for m in maps)
    fig, axes = plt.subplots(len(maps), cols, figsize=(cols * 1.6, len(maps) * 1.7), squeeze=False)
    H = images_u8.shape[1]
    for r, (m, c) in enumerate(zip(maps, captions)):
        side = int(round(m.shape[1] ** 0.5))
        words = [vocab.itos[i] for i in c] + ["<eos>"]
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j == 0:
                ax.imshow(images_u8[r])
                continue
            if j - 1 >= len(m):
                continue
            grid = m[j - 1].reshape(side, side)
            ax.imshow(images_u8[r])
            ax.imshow(numpy.kron(grid, numpy.ones((H // side, H // side))), cmap="magma", alpha=0.6,
                      vmin=0, vmax=max(grid.max(), 1e-9))
            ax.set_title(words[j - 1], fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(opts: Any) -> dict[str, Any]:
    try:
        channels = [int(c) for c in str(opts.channels).split(",")]
    except ValueError:
        raise ExperimentError(f"--channels must be comma-separated integers, got {opts.channels!r}") from None
    for key in ("size", "embedding", "hidden", "beam"):
        if getattr(opts, key) < 1:
            raise ExperimentError(f"--{key} must be >= 1, got {getattr(opts, key)}")
    if opts.size < 2 ** len(channels):
        raise ExperimentError(f"--size {opts.size} is too small for {len(channels)} pooling blocks")
    if not 0 <= opts.dropout < 1:
        raise ExperimentError(f"--dropout must be in [0, 1), got {opts.dropout}")
    t0 = time.perf_counter()
    try:
        images, captions, chars = load_emoji(opts.size)
    except FileNotFoundError as e:
        raise ExperimentError(str(e)) from e
    if opts.limit is not None:
        keep = numpy.random.default_rng(opts.seed + 1).permutation(len(images))[: opts.limit]
        images, captions, chars = images[keep], [captions[i] for i in keep], [chars[i] for i in keep]
    tr_idx, va_idx, te_idx = _split(len(images), opts.val_fraction, opts.test_fraction, opts.seed)
    x = images_to_float(images)
    cap = list(captions)
    vocab = build_caption_vocab([cap[i] for i in tr_idx])
    ids = [encode_caption(c, vocab) for c in cap]
    test_words = [w for i in te_idx for w in cap[i].split()]
    oov = sum(w not in vocab.stoi for w in test_words) / max(len(test_words), 1)
    max_len = max(len(c.split()) for c in cap) + 2
    refs_val, refs_test = [cap[i] for i in va_idx], [cap[i] for i in te_idx]
    print(f"{EXPERIMENT}: {len(images)} emoji {opts.size}x{opts.size}; {len(tr_idx)} train / {len(va_idx)} val / "
          f"{len(te_idx)} test images; {len(vocab)} words in the training vocabulary; {oov:.1%} of the test "
          f"caption words never occur in training ({time.perf_counter() - t0:.1f}s)", flush=True)

    results: dict[str, Any] = {
        "n_train": len(tr_idx), "n_val": len(va_idx), "n_test": len(te_idx), "vocab_size": len(vocab),
        "test_oov_word_rate": oov, "image_size": opts.size, "image_vector": opts.image_vector,
        "augmentation": {"max_shift": opts.max_shift, "jitter": opts.jitter},
    }
    # the baseline any model must beat: copy the caption of the nearest training image (in pixels)
    nn = _nearest_neighbour(x[tr_idx], x[te_idx])
    nn_caps = [cap[tr_idx[j]] for j in nn]
    results["nearest_neighbour"] = caption_scores(nn_caps, refs_test)
    print(f"{EXPERIMENT}: nearest-training-image baseline: test BLEU {results['nearest_neighbour']['bleu']:.2f}, "
          f"exact match {results['nearest_neighbour']['exact_match']:.3f}", flush=True)

    kinds = {"both": [None, "additive"], "none": [None], "attention": ["additive"]}[opts.models]
    augment = {"max_shift": opts.max_shift, "jitter": opts.jitter} if (opts.max_shift or opts.jitter) else None
    texts: dict[str, list[str]] = {}
    models: dict[str, Any] = {}
    for kind in kinds:
        name = "attention" if kind else "no_attention"
        out = os.path.join(opts.out, name)
        os.makedirs(out, exist_ok=True)

        hg.manual_seed(opts.seed)
        model = Captioner(len(vocab), opts.embedding, opts.hidden, channels=channels, attention=kind,
                          dropout=opts.dropout, image_vector=opts.image_vector, image_size=opts.size)
        n_params = int(sum(p.numel() for p in model.parameters()))
        val_cb = CaptionValidation(x[va_idx], refs_val, vocab, max_len)
        es = EarlyStopping(monitor=opts.monitor, mode="min" if opts.monitor == "val_loss" else "max",
                           patience=opts.patience, restore_best_weights=True, verbose=True)
        optimizer = Adam(model.parameters(), lr=opts.lr)
        # cosine decay to lr/40 over the epochs: the validation BLEU of a few hundred captions is noisy, and a
        # decayed learning rate gives a steadier model to select than early stopping at a lucky early epoch
        scheduler = CosineAnnealingLR(optimizer, T_max=opts.epochs, eta_min=opts.lr / 40)
        trainer = CaptionTrainer(model, optimizer, callbacks=[val_cb, es], scheduler=scheduler, grad_clip=5.0,
                                 out_dir=out, progress=opts.progress)
        train_loader = CaptionLoader(x[tr_idx], [ids[i] for i in tr_idx], opts.batch_size, shuffle=True,
                                     seed=opts.seed, augment=augment)
        val_loader = CaptionLoader(x[va_idx], [ids[i] for i in va_idx], 256, shuffle=False, ignore_unknown=True)
        print(f"{EXPERIMENT} [{name}]: {n_params:,} parameters; up to {opts.epochs} epochs, batch "
              f"{opts.batch_size}, lr {opts.lr}", flush=True)
        t1 = time.perf_counter()
        history = trainer.fit(train_loader, val_loader, epochs=opts.epochs)
        train_time = time.perf_counter() - t1
        t2 = time.perf_counter()
        greedy = [decode_caption(p, vocab) for p in decode_captions(model, x[te_idx], max_len)]
        greedy_time = time.perf_counter() - t2
        beam = [decode_caption(p, vocab) for p in decode_captions(model, x[te_idx], max_len, beam_size=opts.beam)]
        sg, sb = caption_scores(greedy, refs_test), caption_scores(beam, refs_test)
        meta = history.meta.get("early_stopping", {})
        results[name] = {
            "test_bleu_greedy": sg["bleu"], "test_exact_match_greedy": sg["exact_match"],
            "test_word_precision_greedy": sg["word_precision"], "test_word_recall_greedy": sg["word_recall"],
            f"test_bleu_beam{opts.beam}": sb["bleu"], f"test_exact_match_beam{opts.beam}": sb["exact_match"],
            "monitor": opts.monitor, "val_best": float(meta.get("best") or 0.0),
            "best_epoch": int(meta.get("best_epoch") or 0),
            "val_bleu_greedy_at_best": float(history["val_bleu"][int(meta.get("best_epoch") or 1) - 1]),
            "epochs_run": len(history), "parameters": n_params, "train_time_s": round(train_time, 1),
            "test_greedy_decode_time_s": round(greedy_time, 2),
            "distinct_test_captions_greedy": len(set(greedy)),
            f"distinct_test_captions_beam{opts.beam}": len(set(beam)),
        }
        if history.meta.get("interrupted"):
            results[name]["interrupted"] = True
        print(f"{EXPERIMENT} [{name}]: test BLEU greedy {sg['bleu']:.2f} / beam {opts.beam} {sb['bleu']:.2f}; "
              f"exact match greedy {sg['exact_match']:.3f} / beam {sb['exact_match']:.3f} "
              f"({train_time:.0f}s training)", flush=True)
        if len(history):
            plot_history(history, os.path.join(out, "learning_curves.png"), metrics=("loss", "token_accuracy"),
                         title=f"{EXPERIMENT} {name} (test BLEU {sg['bleu']:.1f})")
        texts[name] = greedy
        models[name] = model

    n = min(opts.grid, len(te_idx))
    grid_path = os.path.join(opts.out, "captions_test.png")
    short = {"no_attention": "show&tell", "attention": "attend"}
    _caption_grid(images[te_idx[:n]], [(short[k], v[:n]) for k, v in texts.items()], refs_test[:n], grid_path)
    results["captions_png"] = grid_path
    results["test_examples"] = [
        {"char": chars[te_idx[i]], "true": refs_test[i], **{k: v[i] for k, v in texts.items()},
         "nearest_neighbour": nn_caps[i]} for i in range(min(12, len(te_idx)))
    ]
    if "attention" in models:
        k = min(6, opts.grid, len(te_idx))
        ids_att = [encode_caption(c, vocab) for c in texts["attention"][:k]]
        att_path = os.path.join(opts.out, "attention_maps.png")
        _attention_maps(models["attention"], x[te_idx[:k]], images[te_idx[:k]], ids_att, vocab, att_path)
        results["attention_png"] = att_path
    print(f"captions: {grid_path}")
    return results
