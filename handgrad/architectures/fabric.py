"""Convolutional neural fabric (Saxena & Verbeek, NeurIPS 2016): a trellis of L layers x S scales x C channels.

Scale ``s`` has resolution ``ceil(H / 2^s) x ceil(W / 2^s)``. Node ``(l, s)`` holds a ``(N, C, H_s, W_s)`` map:

    layer 0:   h(0, 0) = ReLU(BN(conv3x3(x)))                         the input enters at the finest scale
               h(0, s) = ReLU(BN(conv3x3_stride2(h(0, s-1))))          s > 0
    layer l:   h(l, s) = ReLU(BN( conv3x3(h(l-1, s))                   same scale
                                + conv3x3_stride2(h(l-1, s-1))         from the finer scale
                                + conv3x3(up(h(l-1, s+1))) ))          from the coarser scale (nearest/bilinear)

Every edge is its own 3x3 convolution (no bias: batch norm follows), named ``edge_<l>_<from>_<to>`` (edge
``(l, a, b)`` takes node ``(l-1, a)``, or ``(0, a)`` inside layer 0, to node ``(l, b)``). The output is read
at the coarsest scale of the last layer for ``task="classify"`` (3x3 conv to the classes, then a global
average: logits ``(N, num_classes)``) or at the finest scale for ``task="segment"`` (3x3 conv to the
classes: per-pixel logits ``(N, num_classes, H, W)``). Only 3x3 convolutions, as in the paper.

Nodes from which no path reaches the output node are not computed (for classification, the finer scales of
the last layers): they cannot change the output, and :mod:`~handgrad.architectures.flops` counts what runs.

``edges=`` builds a sub-network of the trellis (only those edges; e.g. :func:`chain_path` for a plain CNN, a
U-Net-shaped path down and up the scales), and :meth:`Fabric.prune` switches edges off after training (a node
with no live input is dead and so are the edges out of it). :meth:`Fabric.edge_norms` gives the Frobenius norm
of every learned convolution, :func:`strongest_path` the input-to-output path with the largest sum of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import handgrad.functional as F
from handgrad import nn
from handgrad.engine.tensor import Tensor

__all__ = ["Fabric", "chain_path", "edge_list", "strongest_path"]

Edge = tuple[int, int, int]  # (layer, from scale, to scale)


def edge_list(layers: int, scales: int) -> list[Edge]:
    """Every edge of an ``layers x scales`` trellis, in the order the forward pass uses them."""
    edges: list[Edge] = [(0, s - 1, s) for s in range(1, scales)]
    for ly in range(1, layers):
        for s in range(scales):
            edges += [(ly, a, s) for a in (s - 1, s, s + 1) if 0 <= a < scales]
    return edges


def chain_path(scale_sequence: list[int]) -> list[Edge]:
    """The edges of a single path that visits scale ``scale_sequence[l]`` at layer ``l`` (starting at scale 0;
    consecutive scales differ by at most 1). ``[0, 1, 2, 2, 2]`` is a plain CNN going down; ``[0, 1, 2, 1, 0]`` a
    U-Net-shaped (encoder-decoder) path. A path that starts at a coarser scale goes down inside layer 0."""
    if not scale_sequence:
        raise ValueError("chain_path: scale_sequence must not be empty")
    edges: list[Edge] = [(0, s - 1, s) for s in range(1, scale_sequence[0] + 1)]
    for ly in range(1, len(scale_sequence)):
        a, b = scale_sequence[ly - 1], scale_sequence[ly]
        if abs(a - b) > 1:
            raise ValueError(f"chain_path: scales {a} -> {b} at layer {ly} are not adjacent")
        edges.append((ly, a, b))
    return edges


class Fabric(nn.Module):
    """A convolutional neural fabric; see the module docstring for the equations.

    Args:
        in_channels, num_classes: input channels and output classes.
        layers (L), scales (S), channels (C): the trellis; ``L >= 1``, ``S >= 1``.
        input_size: ``(H, W)`` the fabric is built for (each scale must keep at least one pixel:
            ``2^(S-1) <= min(H, W)``).
        task: ``"classify"`` (output at the coarsest scale of the last layer) or ``"segment"`` (finest).
        upsample: ``"nearest"`` or ``"bilinear"`` for the coarser-scale inputs.
        edges: the subset of :func:`edge_list` to build (default: all of them).
    """

    def __init__(self, in_channels: int, num_classes: int, layers: int = 8, scales: int = 4, channels: int = 16,
                 input_size: tuple[int, int] = (28, 28), task: str = "classify", upsample: str = "nearest",
                 edges: Iterable[Edge] | None = None) -> None:
        super().__init__()
        if layers < 1 or scales < 1 or channels < 1:
            raise ValueError(f"Fabric: layers, scales and channels must be >= 1, got {layers}, {scales}, {channels}")
        if task not in ("classify", "segment"):
            raise ValueError(f"Fabric: task must be 'classify' or 'segment', got {task!r}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"Fabric: upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        h, w = int(input_size[0]), int(input_size[1])
        if 2 ** (scales - 1) > min(h, w):
            raise ValueError(
                f"Fabric: {scales} scales are too deep for a {h}x{w} input: scale {scales - 1} would be "
                f"{h / 2 ** (scales - 1):g}x{w / 2 ** (scales - 1):g} pixels (below 1x1); use at most "
                f"{int(math.log2(min(h, w))) + 1} scales or an input of at least {2 ** (scales - 1)} pixels a side")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.layers, self.scales, self.channels = layers, scales, channels
        self.input_size, self.task, self.upsample = (h, w), task, upsample
        self.sizes = [(h, w)]
        for _ in range(1, scales):
            ph, pw = self.sizes[-1]
            self.sizes.append(((ph + 1) // 2, (pw + 1) // 2))  # a 3x3 stride-2 conv with padding 1: ceil(n / 2)
        everything = edge_list(layers, scales)
        chosen = set(everything) if edges is None else {tuple(e) for e in edges}
        bad = sorted(chosen - set(everything))
        if bad:
            raise ValueError(f"Fabric: edges {bad[:4]} do not exist in a {layers}x{scales} fabric")
        self.edge_keys = [e for e in everything if e in chosen]
        self.out_scale = scales - 1 if task == "classify" else 0
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.convs = nn.ModuleDict()
        for ly, a, b in self.edge_keys:
            self.convs[_name((ly, a, b))] = nn.Conv2d(channels, channels, 3, stride=2 if b > a else 1, padding=1,
                                                     bias=False)
        self.norms = nn.ModuleDict({f"node_{ly}_{s}": nn.BatchNorm2d(channels)
                                    for ly in range(layers) for s in range(scales)})
        self.head = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.active = set(self.edge_keys)  # edges switched on (prune() switches some off)
        if self.used_edges() is None:
            raise ValueError(f"Fabric: the given edges do not connect the input to the output node "
                             f"(layer {layers - 1}, scale {self.out_scale})")

    # -- structure -------------------------------------------------------------------------------------------
    def used_edges(self) -> set[Edge] | None:
        """The active edges on some input-to-output path (the forward pass computes only these); ``None`` when
        no path reaches the output node."""
        live = {(0, 0)}
        for ly, a, b in self.edge_keys:  # edge_list order is topological
            if (ly, a, b) in self.active and ((ly - 1, a) if ly else (0, a)) in live:
                live.add((ly, b))
        needed = {(self.layers - 1, self.out_scale)}
        used: set[Edge] = set()
        for ly, a, b in reversed(self.edge_keys):
            src = (ly - 1, a) if ly else (0, a)
            if (ly, a, b) in self.active and (ly, b) in needed and src in live:
                needed.add(src)
                used.add((ly, a, b))
        return used if (self.layers - 1, self.out_scale) in live else None

    def edge_norms(self) -> dict[Edge, float]:
        """Frobenius norm of each built edge's convolution weight (0 for a pruned edge)."""
        return {e: (float((self.convs[_name(e)].weight.array ** 2).sum()) ** 0.5 if e in self.active else 0.0)
                for e in self.edge_keys}

    def prune(self, keep: Iterable[Edge]) -> None:
        """Switch off every edge not in ``keep`` (it is skipped in the forward and costs nothing)."""
        keep = {tuple(e) for e in keep}
        old = self.active
        self.active = {e for e in self.edge_keys if e in keep}
        if self.used_edges() is None:
            self.active = old
            raise ValueError("Fabric.prune: the kept edges do not connect the input to the output node "
                             f"(layer {self.layers - 1}, scale {self.out_scale})")

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"Fabric: expected input (N, {self.in_channels}, {self.input_size[0]}, "
                             f"{self.input_size[1]}), got {tuple(x.shape)}")
        used = self.used_edges() or set()
        prev: list[Tensor | None] = [None] * self.scales
        prev[0] = self._node(0, 0, [self.stem(x)])
        for s in range(1, self.scales):
            e = (0, s - 1, s)
            if e in used:
                prev[s] = self._node(0, s, [self.convs[_name(e)](prev[s - 1])])
        for ly in range(1, self.layers):
            cur: list[Tensor | None] = [None] * self.scales
            for s in range(self.scales):
                terms = []
                for a in (s - 1, s, s + 1):
                    e = (ly, a, s)
                    if e not in used:
                        continue
                    src = prev[a]
                    if a > s:  # coarser: up-sample to this scale's size first, then the 3x3 conv
                        src = F.interpolate(src, size=self.sizes[s], mode=self.upsample,
                                            **({"align_corners": False} if self.upsample == "bilinear" else {}))
                    terms.append(self.convs[_name(e)](src))
                if terms:
                    cur[s] = self._node(ly, s, terms)
            prev = cur
        out = self.head(prev[self.out_scale])
        if self.task == "classify":
            return out.mean(dim=(2, 3))
        return out

    def _node(self, ly: int, s: int, terms: list[Tensor]) -> Tensor:
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return F.relu(self.norms[f"node_{ly}_{s}"](total))


def _name(e: Edge) -> str:
    return f"edge_{e[0]}_{e[1]}_{e[2]}"


def strongest_path(norms: dict[Edge, float], layers: int, scales: int, out_scale: int) -> tuple[list[int], float]:
    """The path from the input (layer 0, scale 0) to ``(layers-1, out_scale)`` maximising the sum of its edges'
    norms (dynamic programming over the trellis; layer 0 is entered at scale 0 and may go down inside layer 0).
    Returns ``(scale at each layer, sum of norms)``."""
    neg = float("-inf")
    best = [neg] * scales
    best[0] = 0.0
    back: list[list[Any]] = [[None] * scales for _ in range(layers)]
    for s in range(1, scales):  # inside layer 0 a path can only go down
        e = (0, s - 1, s)
        if e in norms and best[s - 1] > neg:
            best[s] = best[s - 1] + norms[e]
    for ly in range(1, layers):
        nxt = [neg] * scales
        for s in range(scales):
            for a in (s - 1, s, s + 1):
                e = (ly, a, s)
                if 0 <= a < scales and e in norms and best[a] > neg and best[a] + norms[e] > nxt[s]:
                    nxt[s], back[ly][s] = best[a] + norms[e], a
        best = nxt
    if best[out_scale] == neg:
        raise ValueError(f"strongest_path: no path reaches layer {layers - 1}, scale {out_scale}")
    path = [out_scale]
    for ly in range(layers - 1, 0, -1):
        path.append(back[ly][path[-1]])
    return path[::-1], best[out_scale]
