"""What fabric-fashion and fabric-segment share: the trellis figure (edge widths proportional to each learned
convolution's norm, and each edge's share of its node's input signal), the baseline paths through the trellis,
batch-norm recalibration and the pruning study."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy

from handgrad import nn
from handgrad.architectures.fabric import Edge, Fabric, chain_path, strongest_path
from handgrad.architectures.flops import count_multiply_adds
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.tensor import Tensor
from handgrad.optim import SGD


def plain_cnn_path(layers: int, scales: int) -> list[int]:
    """A plain CNN through the trellis: one scale coarser per layer until the coarsest, then stay."""
    return [min(ly, scales - 1) for ly in range(layers)]


def unet_path(layers: int, scales: int) -> list[int]:
    """An encoder-decoder (U-Net-shaped) path: down to the deepest scale the layers allow, back up to scale 0,
    same-scale layers at the finest scale for what is left."""
    depth = min(scales - 1, (layers - 1) // 2)
    seq = list(range(depth + 1)) + list(range(depth - 1, -1, -1))
    return seq + [0] * (layers - len(seq))


def matched_path_fabric(path: list[int], target_parameters: int, channels: int, **kwargs: Any) -> Fabric:
    """The fabric restricted to one path (``chain_path(path)``), its width chosen so that its weight count is
    the closest to ``target_parameters`` (a baseline of similar size); ``kwargs`` as :class:`Fabric`."""
    best: tuple[int, int] | None = None
    for c in range(1, 8 * channels + 1):
        n = sum(p.numel() for p in Fabric(channels=c, edges=chain_path(path), **kwargs).parameters())
        if best is None or abs(n - target_parameters) < abs(best[1] - target_parameters):
            best = (c, n)
        if n > target_parameters:
            break
    return Fabric(channels=best[0], edges=chain_path(path), **kwargs)


def recalibrate_bn(model: Any, batches: Iterable[numpy.ndarray]) -> None:
    """Re-estimate every batch norm's running statistics as the plain average over ``batches`` (train-mode
    forwards under no_grad): a pruned fabric's nodes see different sums than the ones the statistics were
    gathered on."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.running_mean.array[...] = 0
        m.running_var.array[...] = 1
        m.num_batches_tracked.array[...] = 0
        m.momentum = None  # cumulative average
    model.train()
    with no_grad():
        for xb in batches:
            model(Tensor(xb))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


def edge_signals(fabric: Fabric, batches: Iterable[numpy.ndarray]) -> dict[Edge, float]:
    """The signal each live edge carries: the RMS of its convolution's output over ``batches`` (eval mode, no
    grad), i.e. of what it adds into its node's sum before batch norm. A weight norm says how large a filter is;
    this says how much of the node's input actually comes through that edge on real images."""
    used = fabric.used_edges() or set()
    sums: dict[Edge, float] = {e: 0.0 for e in used}
    counts: dict[Edge, int] = {e: 0 for e in used}
    wrapped = []
    for e in used:
        conv = fabric.convs[f"edge_{e[0]}_{e[1]}_{e[2]}"]
        plain = type(conv).forward

        def forward(x: Tensor, _conv: Any = conv, _e: Edge = e, _f: Any = plain) -> Tensor:
            out = _f(_conv, x)
            a = out.numpy().astype(numpy.float64)
            sums[_e] += float((a * a).sum())
            counts[_e] += a.size
            return out

        conv.forward = forward  # an instance attribute: shadows the class's forward until deleted below
        wrapped.append(conv)
    was_training = fabric.training
    fabric.eval()
    try:
        with no_grad():
            for xb in batches:
                fabric(Tensor(xb))
    finally:
        for conv in wrapped:
            del conv.forward
        fabric.train(was_training)
    return {e: float(numpy.sqrt(sums[e] / counts[e])) if counts[e] else 0.0 for e in used}


def _panel(ax: Any, fabric: Fabric, values: dict[Edge, float], path: list[int], scale: float, title: str) -> None:
    on_path = set(chain_path(path))
    used = fabric.used_edges() or set()
    for (ly, a, b) in fabric.edge_keys:
        x0, x1 = (ly - 1, ly) if ly else (-0.25, 0.0)  # inside layer 0: drawn slightly to the left, going down
        if (ly, a, b) not in used:  # reaches no output: never trained (its gradient is zero), drawn thin
            ax.plot([x0, x1], [-a, -b], color="0.75", lw=0.8, ls=":", zorder=0)
            continue
        ax.plot([x0, x1], [-a, -b], color="tab:red" if (ly, a, b) in on_path else "tab:blue",
                lw=scale * values.get((ly, a, b), 0.0), alpha=0.85, solid_capstyle="round", zorder=1)
    for ly in range(fabric.layers):
        for s in range(fabric.scales):
            ax.scatter([ly], [-s], s=40, color="black", zorder=2)
    ax.set_xticks(range(fabric.layers))
    ax.set_yticks([-s for s in range(fabric.scales)])
    ax.set_yticklabels([f"{h}x{w}" for h, w in fabric.sizes])
    ax.set_xlabel("layer")
    ax.set_ylabel("scale")
    ax.set_title(title, fontsize=9)


def draw_trellis(fabric: Fabric, norms: dict[Edge, float], path: list[int], png: str, title: str,
                 signals: dict[Edge, float] | None = None) -> list[int] | None:
    """Nodes at (layer, -scale); each edge a line of width proportional to its convolution's norm; the
    strongest path in red; edges from which no path reaches the output (untrained) thin and dotted. With
    ``signals`` (:func:`edge_signals`) a second panel draws each edge's share of its node's input signal (width
    proportional to the share; an equal split between three inputs is 1/3) and, in red, the path with the
    largest summed shares, which it returns."""
    top = max(norms.values()) or 1.0
    width = max(5.0, 1.2 + 1.1 * fabric.layers)
    panels = 1 if signals is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 1.6 + 0.9 * fabric.scales), squeeze=False)
    _panel(axes[0, 0], fabric, norms, path, 7.0 / top, title)
    signal_path = None
    if signals is not None:
        shares = node_shares(fabric, signals)
        signal_path, _ = strongest_path(shares, fabric.layers, fabric.scales, fabric.out_scale)
        _panel(axes[0, 1], fabric, shares, signal_path, 10.0,
               "share of each node's input signal (RMS of each edge's output on real images);\n"
               "red: the path with the largest summed shares")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return signal_path


def finetune(model: Any, batches: Iterable[tuple[numpy.ndarray, numpy.ndarray]], loss_fn: Callable[[Any, Any], Any],
             lr: float, weight_decay: float = 5e-4) -> int:
    """A short fine-tuning of a pruned copy: one SGD step (Nesterov momentum 0.9, cosine from ``lr`` to 0) per
    ``(x, y)`` batch, in train mode. Returns the number of steps."""
    batches = list(batches)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    model.train()
    for i, (xb, yb) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = 0.5 * lr * (1 + numpy.cos(numpy.pi * i / max(1, len(batches))))
        opt.zero_grad()
        loss_fn(model(Tensor(xb)), Tensor(yb)).backward()
        opt.step()
    model.eval()
    return len(batches)


def node_shares(fabric: Fabric, norms: dict[Edge, float]) -> dict[Edge, float]:
    """Each live edge's norm as a share of the norms of all live edges into the same node (batch norm after the
    sum makes a node's overall weight scale free, so the share, not the raw norm, says which input it uses)."""
    used = fabric.used_edges() or set()
    into: dict[tuple[int, int], float] = {}
    for (ly, a, b) in used:
        into[(ly, b)] = into.get((ly, b), 0.0) + norms[(ly, a, b)]
    return {e: norms[e] / into[(e[0], e[2])] if into[(e[0], e[2])] else 0.0 for e in used}


def pruning_study(fabric: Fabric, keep_fractions: list[float], calib: list[numpy.ndarray],
                  evaluate: Callable[[Any], dict[str, float]], sample: Tensor,
                  tune: Callable[[Any], int] | None = None) -> tuple[list[dict[str, Any]], Any]:
    """Norms, strongest path and the accuracy the fabric keeps when pruned to its strongest edges.

    For each fraction f the top ``f`` of the edges that reach the output, by norm, are kept (plus the strongest
    path, so the output stays connected); ``f = 0`` keeps the strongest path alone. Each pruned copy has its
    batch-norm statistics re-estimated on ``calib`` and is scored by ``evaluate(model) -> metrics`` as it is (no
    weights retrained); with ``tune`` (``tune(model) -> steps``, e.g. :func:`finetune`) it is then fine-tuned
    briefly and scored again (keys ``finetuned_*``).
    Returns ``(rows, (norms, path, path_norm))``."""
    norms = fabric.edge_norms()
    path, total = strongest_path(norms, fabric.layers, fabric.scales, fabric.out_scale)
    used = fabric.used_edges() or set()  # edges that reach the output: the others never trained
    ranked = sorted(used, key=lambda e: -norms[e])
    rows = []
    for f in keep_fractions:
        keep = set(ranked[: int(round(f * len(ranked)))]) | set(chain_path(path))
        m = copy.deepcopy(fabric)
        m.prune(keep)
        recalibrate_bn(m, calib)
        row = {"keep_fraction": f, "edges_kept": len(keep), "edges_total": len(ranked),
               "multiply_adds": count_multiply_adds(m, sample), **evaluate(m)}
        if tune is not None:
            row["finetune_steps"] = tune(m)
            row.update({f"finetuned_{k}": v for k, v in evaluate(m).items()})
        rows.append(row)
    return rows, (norms, path, total)
