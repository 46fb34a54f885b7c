"""MSDNet: multi-scale dense network with early-exit classifiers for anytime prediction (Huang et al., ICLR 2018).

``S`` scales (scale ``s`` at ``ceil(H / 2^s)``), channel multipliers ``g_s`` (``grow_factor``, default
``1, 2, 4, ...``). With ``c_s(l)`` the channels of scale ``s`` after layer ``l``:

    layer 1 (first):  x_0^1 = CBR3x3(x)                                   c_s(1) = channels * g_s
                      x_s^1 = CBR3x3_stride2(x_{s-1}^1)                    s > 0
    layer l > 1:      new_0 = CB(x_0^{l-1})                                growth * g_0 channels
                      new_s = [ CB_stride2(x_{s-1}^{l-1}),  CB(x_s^{l-1}) ]  growth * g_s / 2 channels each
                      x_s^l = [ x_s^{l-1}, new_s ]                          c_s(l) = c_s(l-1) + growth * g_s

``CBR3x3`` is conv3x3 -> BN -> ReLU; ``CB`` is the bottleneck unit conv1x1 (to ``min(c_in, bottleneck * out)``)
-> BN -> ReLU -> conv3x3 -> BN -> ReLU. The concatenation along the layer axis (``[x^{l-1}, new]``) is the
dense connectivity: every layer sees every earlier layer's maps at its scale, plus the down-sampled maps of the
finer scale. Exits (``exits``: layer numbers in ``1..layers``) put an
:class:`~handgrad.architectures.anytime.ExitClassifier` on the coarsest scale after that layer.

``forward(x, max_exit=None)`` returns the logits of exits ``1..max_exit`` (all by default) as a list and stops
after the last layer they need. Multiply-adds per exit: :func:`handgrad.architectures.anytime.exit_costs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import handgrad.functional as F
from handgrad import nn
from handgrad.architectures.anytime import ExitClassifier
from handgrad.engine.ops.shape import cat
from handgrad.engine.tensor import Tensor

__all__ = ["MSDNet"]


class ConvBNReLU(nn.Module):
    """conv3x3 (stride 1 or 2, no bias) -> BN -> ReLU, with an optional conv1x1 -> BN -> ReLU bottleneck first."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bottleneck: int | None = None) -> None:
        super().__init__()
        mid = in_channels
        if bottleneck is not None:
            mid = min(in_channels, bottleneck * out_channels)
            self.reduce = nn.Conv2d(in_channels, mid, 1, bias=False)
            self.reduce_bn = nn.BatchNorm2d(mid)
        else:
            self.reduce = None
        self.conv = nn.Conv2d(mid, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.reduce is not None:
            x = F.relu(self.reduce_bn(self.reduce(x)))
        return F.relu(self.bn(self.conv(x)))


class DenseScaleUnit(nn.Module):
    """The new maps of one scale in one layer: ``down`` (from the finer scale, stride 2; absent at scale 0) and
    ``normal`` (same scale), concatenated with the incoming maps of the scale."""

    def __init__(self, finer_channels: int | None, channels: int, growth: int, bottleneck: int | None) -> None:
        super().__init__()
        if finer_channels is None:
            self.down = None
            self.normal = ConvBNReLU(channels, growth, 1, bottleneck)
        else:
            self.down = ConvBNReLU(finer_channels, growth // 2, 2, bottleneck)
            self.normal = ConvBNReLU(channels, growth - growth // 2, 1, bottleneck)

    def forward(self, same: Tensor, finer: Tensor | None) -> Tensor:
        parts = [same]
        if self.down is not None:
            parts.append(self.down(finer))
        parts.append(self.normal(same))
        return cat(parts, dim=1)


class MSDNet(nn.Module):
    """Multi-scale dense network; see the module docstring.

    Args:
        in_channels, num_classes: input channels and classes.
        input_size: ``(H, W)``; every scale must keep at least one pixel (``2^(S-1) <= min(H, W)``).
        scales: ``S``.  layers: the number of layers (the first one included).
        channels: channels of the first layer at scale 0.  growth: new channels per layer at scale 0.
        grow_factor: channel multiplier per scale (default ``2^s``).
        bottleneck: width multiplier of the 1x1 bottleneck (``None``: no bottleneck).
        exits: the layers (``1..layers``) after which a classifier reads the coarsest scale; default: every
            ``layers // 4``-th layer and the last.
        classifier_channels: width of each exit's classifier convs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: tuple[int, int] = (28, 28),
                 scales: int = 3, layers: int = 8, channels: int = 16, growth: int = 8,
                 grow_factor: Sequence[int] | None = None, bottleneck: int | None = 4,
                 exits: Sequence[int] | None = None, classifier_channels: int = 64) -> None:
        super().__init__()
        h, w = int(input_size[0]), int(input_size[1])
        if scales < 1 or layers < 1 or channels < 1 or growth < 1:
            raise ValueError(f"MSDNet: scales, layers, channels and growth must be >= 1, got {scales}, {layers}, "
                             f"{channels}, {growth}")
        if 2 ** (scales - 1) > min(h, w):
            raise ValueError(f"MSDNet: {scales} scales are too deep for a {h}x{w} input: scale {scales - 1} would be "
                             f"{h / 2 ** (scales - 1):g}x{w / 2 ** (scales - 1):g} pixels (below 1x1)")
        g = list(grow_factor) if grow_factor is not None else [2 ** s for s in range(scales)]
        if len(g) != scales or any(f < 1 for f in g):
            raise ValueError(f"MSDNet: grow_factor needs {scales} positive entries, got {g}")
        if scales > 1 and any(growth * f < 2 for f in g[1:]):
            raise ValueError(f"MSDNet: growth * grow_factor must be >= 2 at coarser scales (split in two), got "
                             f"growth {growth}, grow_factor {g}")
        if exits is None:
            step = max(1, layers // 4)
            exits = sorted({*range(step, layers + 1, step), layers})
        exits = [int(e) for e in exits]
        bad = [e for e in exits if not 1 <= e <= layers]
        if not exits or bad or sorted(set(exits)) != exits:
            raise ValueError(f"MSDNet: exits must be increasing layer numbers in 1..{layers} (there are {layers} "
                             f"layers), got {exits}" + (f"; layer(s) {bad} do not exist" if bad else ""))
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, (h, w)
        self.scales, self.exits = scales, exits
        c = [channels * f for f in g]
        self.first = nn.ModuleList([ConvBNReLU(in_channels if s == 0 else c[s - 1], c[s], 1 if s == 0 else 2)
                                    for s in range(scales)])
        self.layers = nn.ModuleList()
        last = exits[-1]
        for layer in range(2, last + 1):  # layers after the last exit would be unused
            units = nn.ModuleDict({f"scale{s}": DenseScaleUnit(None if s == 0 else c[s - 1], c[s], growth * g[s],
                                                               bottleneck)
                                   for s in self._needed_scales(layer, last)})
            self.layers.append(units)
            c = [c[s] + growth * g[s] for s in range(scales)]
        self.classifiers = nn.ModuleList()
        for e in exits:
            width = channels * g[-1] + (e - 1) * growth * g[-1]
            self.classifiers.append(ExitClassifier(width, num_classes, classifier_channels))

    def _needed_scales(self, layer: int, exit_layer: int) -> range:
        """Scales of ``layer`` that reach the coarsest scale by ``exit_layer`` (a map moves at most one scale
        coarser per layer): ``s >= S - 1 - (exit_layer - layer)``. Finer ones are not computed, as in the
        paper, where deeper blocks drop the finest scales."""
        return range(max(0, self.scales - 1 - (exit_layer - layer)), self.scales)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def forward(self, x: Tensor, max_exit: int | None = None) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"MSDNet: expected input (N, {self.in_channels}, {self.input_size[0]}, "
                             f"{self.input_size[1]}), got {tuple(x.shape)}")
        k = self.num_exits if max_exit is None else int(max_exit)
        if not 1 <= k <= self.num_exits:
            raise ValueError(f"MSDNet: max_exit must be in 1..{self.num_exits}, got {max_exit}")
        last = self.exits[k - 1]
        maps: list[Tensor | None] = []
        for s, unit in enumerate(self.first):  # the first layer is computed whole: it carries x down the scales
            maps.append(unit(x if s == 0 else maps[-1]))
        outs = []
        next_exit = 0
        for layer in range(1, last + 1):
            if layer > 1:
                units = self.layers[layer - 2]
                needed = self._needed_scales(layer, last)  # finer scales would reach no exit up to `last`
                maps = [units[f"scale{s}"](maps[s], maps[s - 1] if s else None) if s in needed else None
                        for s in range(self.scales)]
            if layer == self.exits[next_exit]:
                outs.append(self.classifiers[next_exit](maps[-1]))
                next_exit += 1
        return outs
