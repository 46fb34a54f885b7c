"""``handgrad run siamese-fashion``: a siamese CNN with the contrastive loss, tested on unseen classes.

One embedding CNN (shared weights) maps both images of a pair to R^D; the contrastive loss pulls similar pairs
together and pushes dissimilar ones beyond the margin (the deck's L_c; ``--squared`` for Hadsell et al.'s
squared form). Trained on Fashion-MNIST classes 0-6 with fresh random pairs every epoch, early stopping on the
contrastive loss of fixed validation pairs (seen classes), then evaluated on classes 7-9, which it never saw:
recall@K, mAP@R, verification accuracy (threshold chosen on seen-class pairs), and a 2-D PCA scatter of the
unseen-class embeddings (``embedding.png``). Raw pixels give the baseline numbers (``pixels_*``).
"""

from __future__ import annotations

import os
from typing import Any

from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_record
from handgrad.functional import contrastive_loss
from handgrad.metric import SiameseNetwork
from handgrad.metric.runner import (
    EmbeddingNet,
    PairBatches,
    embed,
    fit_embedding,
    plot_embedding,
    retrieval_report,
    seen_unseen_splits,
)


def add_arguments(p: Any) -> None:
    p.add_argument("--margin", type=float, default=1.0, help="contrastive margin tau (default 1.0)")
    p.add_argument("--squared", action="store_true", help="squared contrastive loss (d^2 and max(0, m - d)^2)")
    p.add_argument("--embedding-dim", type=int, default=16, help="embedding size D (default 16)")
    p.add_argument("--pairs", type=int, default=6000, help="training pairs drawn per epoch (default 6000)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (default 3)")


def run(opts: Any) -> dict[str, Any]:
    if opts.margin <= 0:
        raise ExperimentError(f"--margin must be > 0, got {opts.margin}")
    if opts.quick:
        data = seen_unseen_splits(opts.data, opts.seed, 40, 20, 40)
        n_pairs, n_val = 256, 128
    else:
        data = seen_unseen_splits(opts.data, opts.seed, 1000, 200, 500)
        n_pairs, n_val = opts.pairs, 1000
    net = EmbeddingNet(opts.embedding_dim)
    model = SiameseNetwork(net)
    train = PairBatches(data.x_train, data.y_train, n_pairs, opts.batch_size, opts.seed)
    val = PairBatches(data.x_val, data.y_val, n_val, 500, opts.seed + 1, fixed=True)

    def loss_fn(out: Any, similar: Any) -> Any:
        return contrastive_loss(out[0], out[1], similar, margin=opts.margin, squared=opts.squared)

    print(f"siamese-fashion: {len(data.y_train)} train / {len(data.y_val)} val images (classes 0-6), "
          f"{len(data.y_test)} test images (unseen classes 7-9); {n_pairs} pairs per epoch", flush=True)
    fit, _ = fit_embedding(opts, model, loss_fn, train, val, opts.patience,
                           f"siamese / contrastive loss (margin {opts.margin}{', squared' if opts.squared else ''})")
    e_val, e_test = embed(net, data.x_val), embed(net, data.x_test)
    results: dict[str, Any] = {**fit, **retrieval_report(e_val, data.y_val, e_test, data.y_test, "euclidean",
                                                          opts.seed)}
    px = retrieval_report(data.x_val.reshape(len(data.x_val), -1), data.y_val,
                          data.x_test.reshape(len(data.x_test), -1), data.y_test, "euclidean", opts.seed, "pixels_")
    results.update(px)
    png = plot_embedding(e_test, data.y_test, os.path.join(opts.out, "embedding.png"),
                         f"siamese embeddings of unseen classes (PCA), recall@1 {results['recall@1']:.3f}")
    results["embedding_plot"] = png
    print("siamese-fashion (unseen classes 7-9): " + ", ".join(
        f"{k} {results[k]:.4f}" for k in ("recall@1", "recall@4", "mAP@R", "verification_accuracy",
                                           "pixels_recall@1", "pixels_mAP@R")), flush=True)
    results["data"] = fashion_mnist_record(opts.data)
    return results
