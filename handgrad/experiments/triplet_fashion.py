"""``handgrad run triplet-fashion``: a CNN trained with the triplet loss and online mining, tested on unseen classes.

Each batch holds P classes x K images of Fashion-MNIST classes 0-6; triplets (a, p, n) are mined inside the batch
from the labels and the current distances (``--mining``: semi-hard by default, batch-hard or batch-all; with Adam at
lr 1e-3 batch-hard collapses every embedding to one point, where the loss is stuck at the margin) and
L_3 = max(0, d(a, p) - d(a, n) + margin) is averaged (``handgrad.metric.batch_triplet_loss``). Early stopping on
the loss of fixed validation PK batches (seen classes); then recall@K, mAP@R and verification accuracy on classes
7-9, never seen in training, and the 2-D PCA scatter ``embedding.png``. Raw pixels give the ``pixels_*`` baseline.
"""

from __future__ import annotations

import os
from typing import Any

from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_record
from handgrad.metric import batch_triplet_loss
from handgrad.metric.runner import (
    EmbeddingNet,
    PKBatches,
    embed,
    fit_embedding,
    plot_embedding,
    retrieval_report,
    seen_unseen_splits,
)


def add_arguments(p: Any) -> None:
    p.add_argument("--margin", type=float, default=0.5, help="triplet margin tau (default 0.5)")
    p.add_argument("--mining", choices=("hard", "all", "semihard"), default="semihard",
                   help="triplet mining: batch-hard, batch-all or semi-hard (default semihard)")
    p.add_argument("--embedding-dim", type=int, default=16, help="embedding size D (default 16)")
    p.add_argument("--p", type=int, default=7, help="classes per batch P (default 7)")
    p.add_argument("--k", type=int, default=10, help="images per class K (default 10)")
    p.add_argument("--batches", type=int, default=100, help="PK batches per epoch (default 100)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (default 3)")


def run(opts: Any) -> dict[str, Any]:
    if opts.margin <= 0:
        raise ExperimentError(f"--margin must be > 0, got {opts.margin}")
    if not 2 <= opts.p <= 7 or opts.k < 2:
        raise ExperimentError(f"--p must be in [2, 7] (seen classes) and --k >= 2, got P={opts.p}, K={opts.k}")
    if opts.quick:
        data = seen_unseen_splits(opts.data, opts.seed, 40, 20, 40)
        n_batches, n_val = 6, 4
    else:
        data = seen_unseen_splits(opts.data, opts.seed, 1000, 200, 500)
        n_batches, n_val = opts.batches, 20
    net = EmbeddingNet(opts.embedding_dim)
    train = PKBatches(data.x_train, data.y_train, opts.p, opts.k, n_batches, opts.seed)
    val = PKBatches(data.x_val, data.y_val, opts.p, opts.k, n_val, opts.seed + 1, fixed=True)

    def loss_fn(emb: Any, labels: Any) -> Any:
        return batch_triplet_loss(emb, labels, margin=opts.margin, strategy=opts.mining)

    print(f"triplet-fashion: {len(data.y_train)} train / {len(data.y_val)} val images (classes 0-6), "
          f"{len(data.y_test)} test images (unseen 7-9); {n_batches} batches of P={opts.p} x K={opts.k} per epoch, "
          f"{opts.mining} mining", flush=True)
    fit, _ = fit_embedding(opts, net, loss_fn, train, val, opts.patience,
                           f"triplet loss, {opts.mining} mining (margin {opts.margin})")
    e_val, e_test = embed(net, data.x_val), embed(net, data.x_test)
    results: dict[str, Any] = {"mining": opts.mining, **fit,
                               **retrieval_report(e_val, data.y_val, e_test, data.y_test, "euclidean", opts.seed)}
    results.update(retrieval_report(data.x_val.reshape(len(data.x_val), -1), data.y_val,
                                    data.x_test.reshape(len(data.x_test), -1), data.y_test, "euclidean", opts.seed,
                                    "pixels_"))
    results["embedding_plot"] = plot_embedding(
        e_test, data.y_test, os.path.join(opts.out, "embedding.png"),
        f"triplet ({opts.mining}) embeddings of unseen classes (PCA), recall@1 {results['recall@1']:.3f}")
    print("triplet-fashion (unseen classes 7-9): " + ", ".join(
        f"{k} {results[k]:.4f}" for k in ("recall@1", "recall@4", "mAP@R", "verification_accuracy",
                                           "pixels_recall@1", "pixels_mAP@R")), flush=True)
    results["data"] = fashion_mnist_record(opts.data)
    return results
