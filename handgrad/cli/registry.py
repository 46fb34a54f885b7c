"""The static table of experiments behind ``handgrad list`` and ``handgrad run NAME``.

``EXPERIMENTS`` maps each name to its module, a one-line description, its defaults and the common options it
honours. ``handgrad list`` reads only this table (no experiment module is imported), and ``handgrad run NAME``
imports only NAME's module, so experiments use ordinary top-level imports.

**Adding an experiment (e.g. for a new chapter)** is one file and one entry:

1. ``handgrad/experiments/<module>.py`` defines ``run(opts) -> dict`` (the final metrics, written to
   ``results.json`` by the runner) and, optionally, ``add_arguments(parser)`` for its own options. Raise
   ``handgrad.errors.ExperimentError`` for anything the user can fix (one line on stderr, exit status 2).
2. One ``_entry(...)`` line in ``EXPERIMENTS`` below: name, module, description, ``defaults`` (values for the
   common ``--epochs``/``--batch-size``/``--lr`` and for the experiment's own options whose parser default is
   ``None``), ``quick`` (overrides under ``--quick``), ``without`` (the common options it does NOT honour: the
   parser then refuses them with a one-line error instead of ignoring them; ``why`` may say why, for the
   refusal message) and ``writes`` (the files every run leaves in its out dir besides ``results.json``,
   ``*`` for one folder per model; ``tests/test_cli_matrix.py`` checks them after a ``--quick`` run, and
   that the README's table of output files says the same: add your row there too).

``tests/test_cli_registry.py`` checks the table against the files present in ``handgrad/experiments/``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from handgrad.errors import ExperimentError

__all__ = ["COMMON_OPTIONS", "EXPERIMENTS", "ExperimentEntry", "ExperimentError", "LoadedExperiment", "get", "load"]

# The common options, by their ``opts`` attribute name. ``seed``, ``out`` and ``quick`` are honoured by every
# experiment (the runner seeds the generators, owns the out dir and applies the quick defaults).
COMMON_OPTIONS: tuple[str, ...] = ("epochs", "batch_size", "lr", "seed", "out", "quick", "data", "resume")
ALWAYS: frozenset[str] = frozenset({"seed", "out", "quick"})

ExperimentFn = Callable[[argparse.Namespace], "dict[str, Any] | None"]
ArgumentsFn = Callable[[Any], None]  # receives an argparse parser (or argument group)


@dataclass(frozen=True)
class ExperimentEntry:
    """One row of the table; nothing here imports the experiment."""

    name: str
    module: str
    help: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    quick_defaults: Mapping[str, Any] = field(default_factory=dict)
    options: frozenset[str] = frozenset(COMMON_OPTIONS)  # the common options it honours
    writes: tuple[str, ...] = ()
    why: Mapping[str, str] = field(default_factory=dict)  # why a common option is not honoured (shown on refusal)

    @property
    def quick_name(self) -> str:
        return f"{self.name}-quick"


@dataclass(frozen=True)
class LoadedExperiment:
    entry: ExperimentEntry
    run: ExperimentFn
    add_arguments: ArgumentsFn | None


def _entry(name: str, module: str, help: str, *, defaults: dict[str, Any] | None = None,
           quick: dict[str, Any] | None = None, without: tuple[str, ...] = (), writes: tuple[str, ...] = (),
           why: dict[str, str] | None = None) -> tuple[str, ExperimentEntry]:
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"experiment: name must be a non-empty word, got {name!r}")
    if "\n" in help:
        raise ValueError(f"experiment {name!r}: help must be one line")
    bad = set(without) - (set(COMMON_OPTIONS) - ALWAYS)
    if bad:
        raise ValueError(f"experiment {name!r}: cannot go without {sorted(bad)}")
    if set(why or {}) - set(without):
        raise ValueError(f"experiment {name!r}: 'why' explains options it does not go without")
    options = frozenset(o for o in COMMON_OPTIONS if o not in without)
    return name, ExperimentEntry(name, f"handgrad.experiments.{module}", help, MappingProxyType(dict(defaults or {})),
                                 MappingProxyType(dict(quick or {})), options, tuple(writes),
                                 MappingProxyType(dict(why or {})))


_FIT = ("best.safetensors", "last.safetensors", "history.csv", "history.json", "learning_curves.png")

# One entry per experiment; ``without`` lists the common options an experiment does not honour.
EXPERIMENTS: Mapping[str, ExperimentEntry] = MappingProxyType(dict(sorted([
    _entry("caption-emoji", "caption_emoji",
    "caption colour emoji with their Unicode names: CNN + LSTM decoder, with vs without attention, test BLEU",
           defaults={"epochs": 30, "batch_size": 32, "lr": 2e-3, "channels": "32,64,128", "embedding": 64,
                     "hidden": 128, "patience": 5, "grid": 30},
           quick={"epochs": 2, "limit": 160, "channels": "4,8,8", "embedding": 8, "hidden": 16, "grid": 3},
           without=("data", "resume"),
           writes=("captions_test.png", "attention_maps.png", "*/history.json", "*/learning_curves.png")),
    _entry("char-lm", "char_lm",
    "character-level LSTM language model on Shakespeare (--data FILE for any text): held-out bits/char, samples",
           defaults={"batch_size": 64, "lr": 3e-3, "epochs": 100_000},
           writes=("best.safetensors", "last.safetensors", "history.json", "learning_curves.png", "samples.txt")),
    _entry("clockwork-waveform", "clockwork_waveform",
    "Clockwork RNN vs a plain RNN and an LSTM of equal size generating a 320-step waveform (Koutnik et al. 2014)",
           defaults={"lr": 3e-3}, without=("epochs", "batch_size", "data", "resume"),
           writes=("waveform.png",)),
    _entry("deepgum", "deepgum",
    "DeepGUM vs L2/Huber/Tukey: Davis, hbk, starsCYG, and Fashion-MNIST rotation angles with 0-50% outliers",
           defaults={"epochs": 40, "batch_size": 128, "lr": 1e-3}, quick={"epochs": 3}, without=("resume",),
           writes=("test_error_vs_outliers.png", "lowest_r.png", "classic_*.png", "rotation-*/history.json",
                   "*/learning_curves.png")),
    _entry("distill", "distill",
    "Knowledge distillation on the 5,000 handwritten digits: teacher, student alone, distilled, one class omitted",
           defaults={"epochs": 60, "batch_size": 128, "lr": 1e-3}, quick={"epochs": 2}, without=("resume",),
           writes=("results.md", "*/history.json", "*/learning_curves.png")),
    _entry("early-stopping-fashion", "early_stopping_fashion",
    "Early stopping demo: a big MLP overfits 1,000 Fashion-MNIST images; stops at the val-loss minimum, restores it",
           defaults={"epochs": 100, "batch_size": 100, "lr": 1e-3, "patience": 10}, quick={"epochs": 30, "patience": 5},
           writes=_FIT),
    _entry("fast-rcnn-scenes", "fast_rcnn_scenes",
    "Fast R-CNN (selective search, roi_align/roi_pool head, multi-task loss) on generated scenes: mAP, time/image",
           defaults={"epochs": 12, "batch_size": 2, "lr": 1e-3, "train_scenes": 400, "test_scenes": 100,
                     "pretrain_epochs": 4, "proposal_mode": "fast"},
           quick={"epochs": 1, "train_scenes": 6, "test_scenes": 3, "pretrain_epochs": 1, "proposal_mode": "single"},
           without=("data", "resume"),
           writes=("detector.safetensors", "detector.json", "pr_curves.png", "detections.png", "results.md",
                   "history.json")),
    _entry("faster-rcnn-scenes", "faster_rcnn_scenes",
    "Faster R-CNN (RPN + Fast R-CNN head, joint training) on generated scenes vs Fast R-CNN + selective search",
           defaults={"epochs": 3, "batch_size": 2, "lr": 1e-3, "train_scenes": 2000, "test_scenes": 100,
                     "pretrain_epochs": 4},
           quick={"epochs": 1, "train_scenes": 6, "test_scenes": 3, "pretrain_epochs": 1}, without=("data", "resume"),
           writes=("detector.safetensors", "detector.json", "pr_curves.png", "detections.png", "results.md",
                   "history.json")),
    _entry("mask-rcnn-scenes", "mask_rcnn_scenes",
    "Mask R-CNN (Faster R-CNN + FCN mask head) on generated scenes: box and mask AP, instance-mask grid",
           defaults={"epochs": 3, "batch_size": 2, "lr": 1e-3, "train_scenes": 2000, "test_scenes": 100,
                     "pretrain_epochs": 4},
           quick={"epochs": 1, "train_scenes": 6, "test_scenes": 3, "pretrain_epochs": 1}, without=("data", "resume"),
           writes=("detector.safetensors", "detector.json", "pr_curves.png", "detections.png", "results.md",
                   "history.json")),
    _entry("fabric-fashion", "fabric_fashion",
    "convolutional neural fabric (L x S x C trellis of 3x3 convs) on Fashion-MNIST vs a plain-CNN path; pruned paths",
           defaults={"epochs": 4, "batch_size": 64, "lr": 0.1, "layers": 6, "scales": 4, "channels": 16,
                     "val_size": 6000, "prune_finetune_steps": 200},
           quick={"epochs": 2, "layers": 3, "scales": 3, "channels": 6, "train_size": 512, "val_size": 128,
                  "test_size": 256, "prune_finetune_steps": 3},
           writes=("trellis.png", "fabric/learning_curves.png", "plain_cnn/learning_curves.png")),
    _entry("fabric-segment", "fabric_segment",
    "fabric segmentation of the generated scenes (pixel accuracy, mean IoU) vs U-Net-shaped and plain-CNN paths",
           defaults={"epochs": 10, "batch_size": 16, "lr": 0.05, "layers": 8, "scales": 4, "channels": 16,
                     "image_size": 64, "train_scenes": 1000, "val_scenes": 100, "test_scenes": 200,
                     "prune_finetune_steps": 100},
           quick={"epochs": 1, "layers": 3, "scales": 2, "channels": 4, "image_size": 32, "train_scenes": 8,
                  "val_scenes": 4, "test_scenes": 4, "prune_finetune_steps": 2, "jobs": 1},
           without=("data", "resume"),
           writes=("trellis.png", "fabric/learning_curves.png", "unet_path/learning_curves.png",
                   "plain_cnn/learning_curves.png")),
    _entry("hmrnn-char-lm", "hmrnn_char_lm",
    "hierarchical multiscale LSTM char-LM (Chung et al. 2017): held-out bits/char and a plot of learned boundaries",
           defaults={"batch_size": 32, "lr": 2e-3}, without=("epochs", "resume"),
           writes=("boundaries.png", "train_curve.json")),
    _entry("lenet-fashion", "lenet_fashion",
    "LeNet (conv5-32, conv5-64, fc 1024-128-10) on Fashion-MNIST with early stopping; target >= 90% test accuracy",
           defaults={"epochs": 15, "batch_size": 128, "lr": 1e-3, "val_size": 6000},
           quick={"epochs": 2, "batch_size": 64, "val_size": 256}, writes=_FIT),
    _entry("mdlstm-fashion", "mdlstm_fashion",
    "2-D LSTM scanning Fashion-MNIST patches from four corners (Graves et al. 2007), early stopping",
           defaults={"epochs": 8, "batch_size": 64, "lr": 2e-3}, quick={"epochs": 1}, writes=_FIT),
    _entry("mlp-fashion", "mlp_fashion",
    "MLP 784-256-128-10 (ReLU, dropout 0.2) on Fashion-MNIST with early stopping; target >= 88% test accuracy",
           defaults={"epochs": 40, "batch_size": 128, "lr": 1e-3, "val_size": 6000},
           quick={"epochs": 2, "val_size": 256}, writes=_FIT),
    _entry("mnist1d", "mnist1d",
    "many-to-one GRU classification of MNIST-1D (offline generator); the paper's GRU: ~91% test accuracy",
           defaults={"epochs": 200, "batch_size": 100, "lr": 3e-3}, without=("data", "resume"),
           writes=("model.safetensors", "history.csv", "history.json", "learning_curves.png")),
    _entry("msdnet-fashion", "msdnet_fashion",
    "MSDNet anytime prediction + budgeted batch classification on Fashion-MNIST vs ResNets and an early-exit ResNet",
           defaults={"epochs": 3, "batch_size": 64, "lr": 0.1, "layers": 8, "exits": "2,4,6,8", "channels": 8,
                     "growth": 8, "resnet_blocks": "1,2,3", "resnet_width": 16, "ee_exits": "2,4,6",
                     "classifier_channels": 32, "val_size": 6000},
           quick={"epochs": 1, "layers": 4, "exits": "2,4", "channels": 4, "growth": 4, "resnet_blocks": "1,2",
                  "resnet_width": 4, "ee_exits": "2,4", "classifier_channels": 8, "train_size": 256,
                  "val_size": 128, "test_size": 256, "jobs": 1},
           without=("resume",),
           writes=("anytime.png", "budgeted.png", "msdnet/history.json", "resnet_ee/learning_curves.png")),
    _entry("noisy-labels", "noisy_labels",
    "Fashion-MNIST with 40% corrupted labels: clean-subset-only vs naive vs Xiao et al.'s noise model (EM)",
           defaults={"epochs": 30, "batch_size": 128, "lr": 1e-3}, quick={"epochs": 2}, without=("resume",),
           writes=("results.md", "*/history.json", "*/learning_curves.png")),
    _entry("one-to-many", "one_to_many",
    "one-to-many: a class-conditioned GRU writes MNIST-1D signals (teacher forcing); judged by a classifier",
           defaults={"epochs": 60, "batch_size": 100, "lr": 3e-3}, without=("data", "resume"),
           writes=("generated.png",)),
    _entry("rcnn-scenes", "rcnn_scenes",
    "R-CNN (selective search, warped crops, fine-tuned CNN, per-class SVMs with hard negatives, box regression)",
           defaults={"epochs": 4, "batch_size": 64, "lr": 5e-4, "train_scenes": 300, "test_scenes": 100,
                     "pretrain_epochs": 4, "proposal_mode": "fast"},
           quick={"epochs": 1, "train_scenes": 6, "test_scenes": 3, "pretrain_epochs": 1, "proposal_mode": "single"},
           without=("data", "resume"),
           writes=("detector.safetensors", "detector.json", "rcnn_heads.npz", "pr_curves.png", "detections.png",
                   "results.md", "history.json")),
    _entry("siamese-fashion", "siamese_fashion",
    "Siamese CNN + contrastive loss on Fashion-MNIST classes 0-6; recall@K / mAP@R / verification on unseen 7-9",
           defaults={"epochs": 20, "batch_size": 64, "lr": 1e-3}, quick={"epochs": 2}, without=("resume",),
           writes=("embedding.png", "history.csv", "history.json", "learning_curves.png")),
    _entry("tracking-benchmark", "tracking_benchmark",
    "KCF (grey, HOG), SearchCNN, SiamRPN and OpenCV's KCF on 32 generated OTB-style sequences + ViSP mire-2",
           defaults={"sequences": 32, "min_frames": 100, "max_frames": 300, "mire2_frames": 501},
           quick={"sequences": 2, "min_frames": 30, "max_frames": 40, "mire2_frames": 30},
           without=("epochs", "batch_size", "lr", "data", "resume"),
           writes=("results.md", "precision.png", "success.png", "attributes.png")),
    _entry("tracking-train", "tracking_train",
    "train the SearchCNN (GOTURN-style) and SiamRPN trackers on pairs from generated sequences (CPU sizes)",
           defaults={"epochs": 8, "batch_size": 32, "lr": 2e-3, "train_sequences": 48, "frames": 120, "pairs": 80,
                     "max_gap": 30, "val_sequences": 6},
           quick={"epochs": 1, "train_sequences": 2, "frames": 30, "pairs": 12, "max_gap": 10, "val_sequences": 1},
           without=("data", "resume"),
           writes=("search_cnn.safetensors", "siamrpn.safetensors", "learning_curves_search_cnn.png",
                   "learning_curves_siamrpn.png")),
    _entry("translate-dates", "translate_dates",
    "dates in 300+ locales' formats -> ISO 8601: char-level seq2seq with attention, held-out locales",
           defaults={"epochs": 15, "batch_size": 64, "lr": 2e-3, "n_train": 40000, "n_val": 2000, "n_test": 4000,
                     "embedding": 32, "hidden": 64},
           quick={"epochs": 1, "n_train": 400, "n_val": 50, "n_test": 50, "embedding": 16, "hidden": 16},
           without=("data",),
           writes=("best.safetensors", "last.safetensors", "history.csv", "history.json", "learning_curves.png",
                   "translator.safetensors", "attention_*.png")),
    _entry("translate-en-es", "translate_en_es",
    "English->Spanish Bible verses: BLEU of attention vs none, teacher forcing vs scheduled sampling, beam vs greedy",
           defaults={"epochs": 20, "batch_size": 32, "lr": 2e-3, "max_words": 20, "n_val": 300, "n_test": 500,
                     "vocab": 3000, "embedding": 128, "hidden": 128},
           quick={"epochs": 1, "max_words": 8, "n_val": 20, "n_test": 20, "n_train": 150, "vocab": 300,
                  "embedding": 16, "hidden": 16},
           without=("data", "resume"),
           why={"resume": "it trains one model per row; rerun the rows you need with --rows"},
           writes=("table.md", "*/translator.safetensors", "*/best.safetensors", "*/history.json",
                   "*/learning_curves.png")),
    _entry("triplet-fashion", "triplet_fashion",
    "CNN + triplet loss with batch-hard/all/semi-hard mining on Fashion-MNIST 0-6; retrieval on unseen 7-9",
           defaults={"epochs": 20, "lr": 1e-3}, quick={"epochs": 2}, without=("batch_size", "resume"),
           writes=("embedding.png", "history.csv", "history.json", "learning_curves.png")),
    _entry("vanishing-gradients", "vanishing_gradients",
    "tanh RNN vs LSTM vs GRU on the adding problem (T=100): gradient norm vs distance plot, who solves it",
           defaults={"batch_size": 64, "lr": 1e-2}, without=("epochs", "data", "resume"),
           writes=("gradient_norms.png", "results.md")),
    _entry("word-boundaries", "word_boundaries",
    "restore the spaces of unspaced text: per-character word-start tagging, uni- vs bidirectional LSTM",
           defaults={"epochs": 20, "batch_size": 32, "lr": 3e-3, "embedding": 32, "hidden": 96, "window": 100,
                     "steps_per_epoch": 100, "val_chars": 30000, "test_chars": 100000},
           quick={"epochs": 2, "embedding": 8, "hidden": 8, "window": 30, "steps_per_epoch": 5, "val_chars": 1000,
                  "test_chars": 2000},
           without=("resume",),
           writes=("*/history.json", "*/learning_curves.png")),
])))


def get(name: str) -> ExperimentEntry:
    """The table entry called ``name``; ``KeyError`` with the known names otherwise."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS) or '(none)'}")
    return EXPERIMENTS[name]


def load(name: str) -> LoadedExperiment:
    """Import NAME's module (and only it) and return its ``run`` and ``add_arguments``."""
    entry = get(name)
    module = importlib.import_module(entry.module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError(f"experiment {name!r}: {entry.module} has no run(opts) function")
    return LoadedExperiment(entry, run, getattr(module, "add_arguments", None))
