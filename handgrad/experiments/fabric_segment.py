"""``handgrad run fabric-segment``: per-pixel segmentation of the generated scenes with a convolutional fabric.

The scenes (:class:`~handgrad.data.scenes.DetectionScenes`, drawn at ``--image-size`` with objects scaled to fit)
give exact instance masks; the semantic label map is background 0 and each object's class on its visible pixels (13
classes). A fabric with its output at the finest scale of the last layer (per-pixel logits) is trained with per-
pixel cross-entropy (class weights: the square root of median-frequency balancing by default; the architecture
recipe of :mod:`~handgrad.experiments._recipe` -- SGD + Nesterov momentum, OneCycle, weight decay, label
smoothing -- with the image and its label map shifted and mirrored together; early stopping on the validation
loss) and compared with two baselines of similar weight count built from the same trellis (each path widened to
match), trained the same way: a U-Net-shaped path (down the scales and back up) and a plain CNN (the path that
stays at the finest scale). ``--models`` trains a subset; ``--jobs`` trains them in several processes at once
(:mod:`~handgrad.experiments._parallel`).
Reported: pixel accuracy and mean IoU on the test scenes (IoU averaged over the classes present in the ground truth
or the prediction), weights, multiply-adds, time; ``trellis.png`` (edge width ~ each learned convolution's norm,
strongest path in red) and the pruned fabric's scores. ``--quick``: a handful of small scenes, a tiny fabric, one
epoch.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy

import handgrad.functional as F
from handgrad.architectures import Fabric
from handgrad.architectures.flops import count_multiply_adds
from handgrad.data import DataLoader, TensorDataset
from handgrad.data.scenes import DetectionScenes, SceneConfig
from handgrad.data.transforms import random_crop, random_horizontal_flip
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import manual_seed
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments._common import count_parameters
from handgrad.experiments._fabric_common import (
    draw_trellis,
    edge_signals,
    finetune,
    matched_path_fabric,
    node_shares,
    pruning_study,
    unet_path,
)
from handgrad.experiments._parallel import run_tasks
from handgrad.experiments._recipe import (
    add_recipe_arguments,
    check_recipe,
    make_optimizer,
    make_schedule,
    recipe_record,
)
from handgrad.experiments.fabric_fashion import _keep_fractions
from handgrad.train import EarlyStopping, StandardUpdater, Trainer
from handgrad.train.plots import plot_history


def add_arguments(p: Any) -> None:
    p.add_argument("--layers", type=int, default=None, help="fabric layers L (default 8)")
    p.add_argument("--scales", type=int, default=None, help="fabric scales S (default 4)")
    p.add_argument("--channels", type=int, default=None, help="channels C of every node (default 16)")
    p.add_argument("--upsample", choices=("nearest", "bilinear"), default="bilinear")
    p.add_argument("--image-size", type=int, default=None, help="scene side in pixels (default 64)")
    p.add_argument("--train-scenes", type=int, default=None, help="training scenes (default 1000)")
    p.add_argument("--val-scenes", type=int, default=None, help="validation scenes (default 100)")
    p.add_argument("--test-scenes", type=int, default=None, help="test scenes (default 200)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (default 3)")
    p.add_argument("--class-weights", choices=("sqrt", "balanced", "none"), default="sqrt",
                   help="per-pixel loss weights over the training maps: sqrt (default: the square root of median-"
                        "frequency balancing), balanced (median-frequency balancing: the background weighs ~1/80 of "
                        "an object, so background pixels get object labels) or none (short runs then predict "
                        "background everywhere)")
    p.add_argument("--keep", default="0.5,0.25,0", help="edge fractions kept when pruning (default 0.5,0.25,0)")
    p.add_argument("--models", default="fabric,unet_path,plain_cnn",
                   help="which of fabric, unet_path, plain_cnn to train (default all three)")
    p.add_argument("--jobs", type=int, default=None,
                   help="train the models in this many processes at once, the BLAS threads shared out among them "
                        "(default: one per BLAS thread, at most one per model)")
    p.add_argument("--prune-finetune-steps", type=int, default=None,
                   help="SGD steps (lr 0.01 cosine) fine-tuning each pruned copy after it is scored as pruned "
                        "(default 100; 0: none)")
    add_recipe_arguments(p)
    p.set_defaults(augment="crop-flip")  # the measured segmentation runs shift and mirror image + labels


def scene_arrays(split: str, n: int, size: int, seed: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Images ``(n, 3, size, size)`` float32 (pixel/255 - 0.5) and label maps ``(n, size, size)`` int64."""
    cfg = SceneConfig(image_size=(size, size), min_size=max(6, size // 6), max_size=max(12, size // 2),
                      min_objects=1, max_objects=5)
    ds = DetectionScenes(split, size=n, seed=seed, config=cfg)
    xs = numpy.empty((n, 3, size, size), numpy.float32)
    ys = numpy.zeros((n, size, size), numpy.int64)
    for i in range(n):
        image, target = ds[i]
        xs[i] = image.transpose(2, 0, 1).astype(numpy.float32) / 255.0 - 0.5
        for mask, label in zip(target["masks"], target["labels"]):  # visible parts: they do not overlap
            ys[i][mask] = label
    return xs, ys


def segmentation_scores(pred: numpy.ndarray, truth: numpy.ndarray, num_classes: int) -> dict[str, float]:
    """Pixel accuracy and mean IoU (over classes present in the truth or the prediction)."""
    conf = numpy.bincount(truth.ravel() * num_classes + pred.ravel(), minlength=num_classes ** 2)
    conf = conf.reshape(num_classes, num_classes)
    inter = numpy.diag(conf).astype(numpy.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return {"pixel_accuracy": float(inter.sum() / conf.sum()),
            "mean_iou": float((inter[present] / union[present]).mean()),
            "background_iou": float(inter[0] / union[0]) if union[0] else 0.0}


def predict(model: Any, x: numpy.ndarray, batch: int = 16) -> numpy.ndarray:
    model.eval()
    out = []
    with no_grad():
        for i in range(0, len(x), batch):
            out.append(model(Tensor(x[i:i + batch])).numpy().argmax(1))
    return numpy.concatenate(out)


def pixel_accuracy(output: Any, target: Any) -> float:
    """The Trainer's per-batch metric: share of pixels whose argmax class is right."""
    return float((output.numpy().argmax(1) == numpy.asarray(target)).mean())


def class_weights(labels: numpy.ndarray, num_classes: int, power: float = 1.0) -> numpy.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015): ``w_c = (median_k f_k / f_c)^power`` over the classes
    present (``f_c``: share of the pixels of class c); absent classes get weight 0. ``power = 0.5`` softens it."""
    freq = numpy.bincount(labels.ravel(), minlength=num_classes).astype(numpy.float64) / labels.size
    w = numpy.zeros(num_classes)
    present = freq > 0
    w[present] = (numpy.median(freq[present]) / freq[present]) ** power
    return w.astype(numpy.float32)


class SegmentAugmentingUpdater(StandardUpdater):
    """Training batches shifted by up to 4 pixels (pad with background, random crop) and mirrored left-right
    (``crop-flip``), image and label map alike; evaluation batches untouched."""

    def __init__(self, model: Any, optimizer: Any, loss_fn: Any, mode: str, seed: int) -> None:
        super().__init__(model, optimizer, loss_fn)
        self.mode, self.rng = mode, numpy.random.default_rng(seed)

    def update(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        a = x.numpy() if isinstance(x, Tensor) else numpy.asarray(x)
        m = (y.numpy() if isinstance(y, Tensor) else numpy.asarray(y)).astype(numpy.float32)[:, None]
        both = numpy.concatenate([a, m], axis=1)  # one draw moves image and labels together
        if self.mode in ("crop", "crop-flip"):
            both = random_crop(both, both.shape[-2:], padding=4, generator=self.rng)
        if self.mode == "crop-flip":
            both = random_horizontal_flip(both, generator=self.rng)
        xa = numpy.ascontiguousarray(both[:, :-1])
        ya = numpy.ascontiguousarray(both[:, -1]).astype(numpy.int64)
        return super().update((Tensor(xa), Tensor(ya)))


def _train(opts: Any, name: str, model: Any, data: dict[str, Any], num_classes: int) -> dict[str, Any]:
    out = os.path.join(opts.out, name)
    os.makedirs(out, exist_ok=True)
    train = DataLoader(TensorDataset(*data["train"]), batch_size=opts.batch_size, shuffle=True, seed=opts.seed)
    val = DataLoader(TensorDataset(*data["val"]), batch_size=32)
    es = EarlyStopping(monitor="val_loss", patience=opts.patience, restore_best_weights=True)
    weight = None
    if opts.class_weights != "none":
        power = 0.5 if opts.class_weights == "sqrt" else 1.0
        weight = Tensor(class_weights(data["train"][1], num_classes, power))

    def loss_fn(output: Any, target: Any) -> Any:
        eps = opts.label_smoothing if output.requires_grad else 0.0
        return F.cross_entropy(output, target, weight=weight, label_smoothing=eps)

    optimizer = make_optimizer(opts, model.parameters())
    sched = make_schedule(opts, optimizer, len(train))
    updater = SegmentAugmentingUpdater(model, optimizer, loss_fn, opts.augment, opts.seed)
    trainer = Trainer(updater=updater, metrics=[pixel_accuracy], callbacks=[es] + ([sched] if sched else []),
                      out_dir=out, progress=opts.progress, run_name=f"{opts.experiment}/{name}")
    print(f"{name}: {count_parameters(model):,} parameters", flush=True)
    start = time.perf_counter()
    history = trainer.fit(train, val, epochs=opts.epochs)
    seconds = time.perf_counter() - start
    if len(history):
        plot_history(history, os.path.join(out, "learning_curves.png"), title=name)
    scores = segmentation_scores(predict(model, data["test"][0]), data["test"][1], num_classes)
    sample = Tensor(data["test"][0][:1])
    print(f"{name}: pixel accuracy {scores['pixel_accuracy']:.4f}, mean IoU {scores['mean_iou']:.4f}", flush=True)
    return {**scores, "parameters": count_parameters(model), "multiply_adds": count_multiply_adds(model, sample),
            "train_time_s": round(seconds, 1), "epochs_run": len(history),
            "best_epoch": int(history.meta.get("early_stopping", {}).get("best_epoch") or 0)}


MODELS = ("plain_cnn", "unet_path", "fabric")  # most expensive first: the order the --jobs workers take them in
CLASSES = 13


def _data(opts: Any) -> dict[str, Any]:
    size = opts.image_size
    return {"train": scene_arrays("train", opts.train_scenes, size, opts.seed),
            "val": scene_arrays("val", opts.val_scenes, size, opts.seed),
            "test": scene_arrays("test", opts.test_scenes, size, opts.seed)}


def _build(name: str, opts: Any) -> Any:
    """One of ``MODELS``; the two paths are widened to the fabric's weight count."""
    size = opts.image_size
    kw = dict(layers=opts.layers, scales=opts.scales, channels=opts.channels, input_size=(size, size),
              task="segment", upsample=opts.upsample)
    try:
        fabric = Fabric(3, CLASSES, **kw)
        if name == "fabric":
            return fabric
        base_kw = {k: v for k, v in kw.items() if k != "channels"}
        path = unet_path(opts.layers, opts.scales) if name == "unet_path" else [0] * opts.layers
        return matched_path_fabric(path, count_parameters(fabric), opts.channels, in_channels=3,
                                   num_classes=CLASSES, **base_kw)
    except ValueError as e:
        raise ExperimentError(str(e)) from e


def _model_task(name: str, opts: Any, keep: list[float]) -> dict[str, Any]:
    """Generate the scenes, build (seeded alone), train and score one model; for the fabric also the pruning
    study and ``trellis.png``. A ``_parallel`` task: returns the results entries it owns."""
    data = _data(opts)
    manual_seed(opts.seed)
    model = _build(name, opts)
    rec = _train(opts, name, model, data, CLASSES)
    if name != "fabric":
        path = unet_path(opts.layers, opts.scales) if name == "unet_path" else [0] * opts.layers
        return {name: {**rec, "path": path, "channels": model.channels}}
    fabric = model
    calib = [data["train"][0][i:i + 32] for i in range(0, min(len(data["train"][0]), 32 * 8), 32)]
    rng = numpy.random.default_rng(opts.seed + 1)
    xs, ys = data["train"]
    weight = None if opts.class_weights == "none" else Tensor(
        class_weights(ys, CLASSES, 0.5 if opts.class_weights == "sqrt" else 1.0))

    def tune(m: Any) -> int:
        idx = [rng.choice(len(xs), min(opts.batch_size, len(xs)), replace=False)
               for _ in range(opts.prune_finetune_steps)]
        return finetune(m, ((xs[i], ys[i]) for i in idx), lambda o, t: F.cross_entropy(o, t, weight=weight), 0.01)

    rows, (norms, spath, total) = pruning_study(
        fabric, keep, calib, lambda m: segmentation_scores(predict(m, data["test"][0]), data["test"][1], CLASSES),
        Tensor(data["test"][0][:1]), tune if opts.prune_finetune_steps > 0 else None)
    signals = edge_signals(fabric, [data["val"][0][i:i + 32] for i in range(0, len(data["val"][0]), 32)])
    signal_path = draw_trellis(fabric, norms, spath, os.path.join(opts.out, "trellis.png"),
                               f"segmentation fabric {opts.layers}x{opts.scales}x{opts.channels}: edge width ~ "
                               f"||W||, strongest path in red\n(mean IoU {rec['mean_iou']:.3f})", signals)
    ranked = sorted(norms.items(), key=lambda kv: -kv[1])
    print(f"strongest path (scale per layer): {spath}; pruned: " + "; ".join(
        f"keep {r['keep_fraction']:g}: mIoU {r['mean_iou']:.4f}"
        + (f" ({r['finetuned_mean_iou']:.4f} fine-tuned)" if "finetuned_mean_iou" in r else "")
        + f" at {r['multiply_adds']:,} MACs" for r in rows), flush=True)
    shares = node_shares(fabric, signals)
    return {"fabric": rec, "strongest_path": {"scales": spath, "norm_sum": round(total, 4)},
            "strongest_signal_path": signal_path,
            "edge_signal_shares": {f"{e[0]}:{e[1]}->{e[2]}": round(v, 3) for e, v in sorted(shares.items())},
            "strongest_edges": [{"edge": list(e), "norm": round(v, 4)} for e, v in ranked[:8]], "pruned": rows}


def _summary(result: dict[str, Any]) -> str:
    name = next(iter(result))
    r = result[name]
    return f"{r['epochs_run']} epochs, {r['train_time_s']:.0f} s of training, mean IoU {r['mean_iou']:.4f}"


def run(opts: Any) -> dict[str, Any]:
    keep = _keep_fractions(opts.keep)
    check_recipe(opts)
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ExperimentError(f"--models takes fabric, unet_path and/or plain_cnn, got {opts.models!r}")
    if opts.prune_finetune_steps < 0:
        raise ExperimentError(f"--prune-finetune-steps must be >= 0, got {opts.prune_finetune_steps}")
    for name in ("train_scenes", "val_scenes", "test_scenes", "image_size"):
        if getattr(opts, name) < 1:
            raise ExperimentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    for name in models:  # every configuration error before any work
        _build(name, opts)
    start = time.perf_counter()
    test = scene_arrays("test", opts.test_scenes, opts.image_size, opts.seed)
    freq = numpy.bincount(test[1].ravel(), minlength=CLASSES) / test[1].size
    results: dict[str, Any] = {"scenes": {"train": opts.train_scenes, "val": opts.val_scenes,
                                          "test": opts.test_scenes}, "image_size": opts.image_size,
                               "class_weights": opts.class_weights,
                               "test_data_time_s": round(time.perf_counter() - start, 1),
                               "test_background_fraction": float(freq[0]), "recipe": recipe_record(opts)}
    order = [m for m in MODELS if m in models]
    done = run_tasks(_model_task, {m: (opts, keep) for m in order}, opts.jobs, opts.out, "fabric-segment",
                     _summary)
    for name in ("unet_path", "plain_cnn", "fabric"):
        if name in done:
            results.update(done[name])
    if "fabric" in done:
        results["pixel_accuracy"] = results["fabric"]["pixel_accuracy"]
        results["mean_iou"] = results["fabric"]["mean_iou"]
    return results
