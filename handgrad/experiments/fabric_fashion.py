"""``handgrad run fabric-fashion``: a convolutional neural fabric classifies Fashion-MNIST (Saxena & Verbeek 2016).

The fabric (``--layers`` x ``--scales`` x ``--channels``, output at the coarsest scale of the last layer) is
trained with the architecture recipe (:mod:`~handgrad.experiments._recipe`: SGD + Nesterov momentum 0.9, OneCycle,
weight decay 5e-4, label smoothing 0.1; ``--augment crop-flip`` optional; early stopping on the validation loss; into
``fabric/``); the baseline is a plain CNN of similar size: the single path through the same trellis that goes one
scale down per layer, widened to about the fabric's weight count (``plain_cnn/``). Then the "search" part:
``trellis.png`` draws every edge with a width proportional to its learned convolution's norm and the strongest
input-to-output path in red, and the fabric is pruned to its strongest edges (``--keep``: fractions of the edges; 0
= the strongest path alone; batch norm re-estimated on training batches) to show what accuracy it keeps for how
many multiply-adds, as pruned and after ``--prune-finetune-steps`` SGD steps.

Target (the issue's): >= 92% test accuracy within about 30 minutes on 2 cores. ``--quick``: a few hundred images, a
tiny fabric, 1 epoch.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.architectures import Fabric
from handgrad.architectures.flops import count_multiply_adds
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments._common import count_parameters, fashion_mnist_splits
from handgrad.experiments._fabric_common import (
    draw_trellis,
    edge_signals,
    finetune,
    matched_path_fabric,
    node_shares,
    plain_cnn_path,
    pruning_study,
)
from handgrad.experiments._recipe import (
    add_recipe_arguments,
    check_recipe,
    fit,
    make_optimizer,
    recipe_record,
    smoothed_cross_entropy,
)
from handgrad.train import StandardUpdater


def add_arguments(p: Any) -> None:
    p.add_argument("--layers", type=int, default=None, help="fabric layers L (default 6)")
    p.add_argument("--scales", type=int, default=None, help="fabric scales S (default 4: 28, 14, 7, 4 px)")
    p.add_argument("--channels", type=int, default=None, help="channels C of every node (default 16)")
    p.add_argument("--upsample", choices=("nearest", "bilinear"), default="nearest")
    p.add_argument("--train-size", type=int, default=None, help="training images (default: all 54,000)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default: all 10,000)")
    p.add_argument("--val-size", type=int, default=None, help="validation images (default 6000)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (default 3)")
    p.add_argument("--keep", default="0.75,0.5,0.25,0",
                   help="edge fractions kept when pruning (default 0.75,0.5,0.25,0; 0 = the strongest path)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain-CNN baseline")
    p.add_argument("--prune-finetune-steps", type=int, default=None,
                   help="SGD steps (batches of --batch-size, lr 0.01 cosine) fine-tuning each pruned copy after it is "
                        "scored as pruned (default 200; 0: none)")
    add_recipe_arguments(p)


def _keep_fractions(text: str) -> list[float]:
    try:
        fr = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ExperimentError(f"--keep must be comma-separated fractions, got {text!r}") from e
    if not fr or any(not 0 <= f <= 1 for f in fr):
        raise ExperimentError(f"--keep fractions must be in [0, 1], got {text!r}")
    return fr


def _key(e: tuple[int, int, int]) -> str:
    return f"{e[0]}:{e[1]}->{e[2]}"


def accuracy_of(model: Any, x: numpy.ndarray, y: numpy.ndarray, batch: int = 500) -> float:
    model.eval()
    right = 0
    with no_grad():
        for i in range(0, len(x), batch):
            right += int((model(Tensor(x[i:i + batch])).numpy().argmax(1) == y[i:i + batch]).sum())
    return right / len(x)


def run(opts: Any) -> dict[str, Any]:
    keep = _keep_fractions(opts.keep)
    check_recipe(opts)
    if opts.prune_finetune_steps < 0:
        raise ExperimentError(f"--prune-finetune-steps must be >= 0, got {opts.prune_finetune_steps}")
    for name in ("layers", "scales", "channels"):
        if getattr(opts, name) < 1:
            raise ExperimentError(f"--{name} must be >= 1, got {getattr(opts, name)}")
    try:
        fabric = Fabric(1, 10, layers=opts.layers, scales=opts.scales, channels=opts.channels, input_size=(28, 28),
                        upsample=opts.upsample)
    except ValueError as e:
        raise ExperimentError(str(e)) from e
    splits = fashion_mnist_splits(opts.data, opts.seed, val_size=opts.val_size, train_size=opts.train_size,
                                  test_size=opts.test_size)
    sample = Tensor(splits.x_test[:1])
    config = {**{k: getattr(opts, k) for k in ("layers", "scales", "channels", "upsample")}, **recipe_record(opts)}
    results: dict[str, Any] = {"data": splits.data, **splits.sizes(), "config": config}
    loss = smoothed_cross_entropy(opts.label_smoothing)
    r, _ = fit(opts, "fabric", StandardUpdater(fabric, make_optimizer(opts, fabric.parameters()), loss), splits,
               resume=opts.resume)  # --resume: the fabric's checkpoint
    r["test_accuracy"] = accuracy_of(fabric, splits.x_test, splits.y_test)
    r["multiply_adds"] = count_multiply_adds(fabric.eval(), sample)
    print(f"fabric: test accuracy {r['test_accuracy']:.4f}", flush=True)
    results["fabric"] = r
    if not opts.no_baseline:
        path = plain_cnn_path(opts.layers, opts.scales)
        base = matched_path_fabric(path, count_parameters(fabric), opts.channels, in_channels=1, num_classes=10,
                                   layers=opts.layers, scales=opts.scales, input_size=(28, 28))
        rb, _ = fit(opts, "plain_cnn", StandardUpdater(base, make_optimizer(opts, base.parameters()), loss), splits)
        rb["test_accuracy"] = accuracy_of(base, splits.x_test, splits.y_test)
        rb["multiply_adds"] = count_multiply_adds(base.eval(), sample)
        rb["path"], rb["channels"] = path, base.channels
        print(f"plain CNN path {path}, {base.channels} channels: test accuracy {rb['test_accuracy']:.4f}", flush=True)
        results["plain_cnn"] = rb
    calib = [splits.x_train[i:i + 256] for i in range(0, min(len(splits.x_train), 256 * 8), 256)]
    rng = numpy.random.default_rng(opts.seed + 1)

    def tune(m: Any) -> int:
        idx = [rng.choice(len(splits.x_train), opts.batch_size, replace=False)
               for _ in range(opts.prune_finetune_steps)]
        return finetune(m, ((splits.x_train[i], splits.y_train[i]) for i in idx), F.cross_entropy, lr=0.01)

    rows, (norms, path, total) = pruning_study(
        fabric, keep, calib, lambda m: {"test_accuracy": accuracy_of(m, splits.x_test, splits.y_test)}, sample,
        tune if opts.prune_finetune_steps > 0 else None)
    signals = edge_signals(fabric, [splits.x_val[i:i + 250] for i in range(0, min(len(splits.x_val), 1000), 250)])
    signal_path = draw_trellis(fabric, norms, path, os.path.join(opts.out, "trellis.png"),
                               f"fabric {opts.layers}x{opts.scales}x{opts.channels}: edge width ~ ||W||, strongest "
                               f"path in red\n(test acc {r['test_accuracy']:.3f})", signals)
    ranked = sorted(norms.items(), key=lambda kv: -kv[1])
    results["strongest_path"] = {"scales": path, "norm_sum": round(total, 4)}
    results["strongest_edges"] = [{"edge": list(e), "norm": round(v, 4)} for e, v in ranked[:8]]
    results["edge_norm_range"] = [round(min(v for v in norms.values() if v), 4), round(max(norms.values()), 4)]
    results["edge_node_shares"] = {_key(e): round(v, 3) for e, v in sorted(node_shares(fabric, norms).items())}
    results["edge_signal_shares"] = {_key(e): round(v, 3) for e, v in sorted(node_shares(fabric, signals).items())}
    results["strongest_signal_path"] = signal_path
    results["pruned"] = rows
    results["test_accuracy"] = r["test_accuracy"]
    results["target_test_accuracy"] = 0.92
    results["target_met"] = bool(r["test_accuracy"] >= 0.92)
    print(f"strongest path (scale per layer): {path}; pruned: " + "; ".join(
        f"keep {row['keep_fraction']:g}: {row['test_accuracy']:.4f}"
        + (f" ({row['finetuned_test_accuracy']:.4f} fine-tuned)" if "finetuned_test_accuracy" in row else "")
        + f" at {row['multiply_adds']:,} MACs" for row in rows))
    return results
