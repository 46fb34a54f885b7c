"""ResNet-style baseline for small images (He et al. 2016, the CIFAR variant), with optional early exits.

    stem:   conv3x3(in -> w_0) -> BN -> ReLU
    stage i (i = 0..len(widths)-1): ``blocks[i]`` basic blocks of width ``w_i``; the first block of stages i > 0
            halves the resolution (stride 2) and projects the shortcut (conv1x1 stride 2 -> BN)
    basic block:  y = ReLU( BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x) )
    head:   global average pooling -> linear(w_last -> classes)

``exits`` (block numbers ``1..total blocks``, counted across stages) attach an
:class:`~handgrad.architectures.anytime.ExitClassifier` after those blocks; the final head is always the last
exit. Without exits ``forward`` returns the logits ``(N, classes)``; with exits (or ``max_exit``) the list of
each exit's logits, stopping after the block the last requested exit needs (the early-exit baseline of MSDNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import handgrad.functional as F
from handgrad import nn
from handgrad.architectures.anytime import ExitClassifier
from handgrad.engine.tensor import Tensor

__all__ = ["BasicBlock", "FinalHead", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or conv1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.proj = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.proj_bn = nn.BatchNorm2d(out_channels)
        else:
            self.proj = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return F.relu(y + shortcut)


class FinalHead(nn.Module):
    """Global average pooling -> linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class ResNet(nn.Module):
    """ResNet for small images; see the module docstring.

    Args:
        in_channels, num_classes: input channels and classes.
        blocks: basic blocks per stage (e.g. ``(1, 1, 1)``: ResNet-8; ``(3, 3, 3)``: ResNet-20).
        widths: channels per stage.
        exits: block numbers (``1..sum(blocks)``) with an early-exit classifier (the final head is added last).
        classifier_channels: width of the early-exit classifiers' convs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, blocks: Sequence[int] = (1, 1, 1),
                 widths: Sequence[int] = (16, 32, 64), exits: Sequence[int] | None = None,
                 classifier_channels: int = 64) -> None:
        super().__init__()
        blocks, widths = [int(b) for b in blocks], [int(w) for w in widths]
        if len(blocks) != len(widths) or not blocks or any(b < 1 for b in blocks) or any(w < 1 for w in widths):
            raise ValueError(f"ResNet: blocks and widths must be equally long lists of positive numbers, got "
                             f"{blocks} and {widths}")
        total = sum(blocks)
        exits = [] if exits is None else [int(e) for e in exits]
        bad = [e for e in exits if not 1 <= e <= total]
        if bad or sorted(set(exits)) != exits:
            raise ValueError(f"ResNet: exits must be increasing block numbers in 1..{total} (there are {total} "
                             f"blocks), got {exits}" + (f"; block(s) {bad} do not exist" if bad else ""))
        self.in_channels, self.has_exits = in_channels, bool(exits)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        self.blocks = nn.ModuleList()
        block_width = []
        c = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                self.blocks.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
                block_width.append(w)
        self.exit_blocks = [e for e in exits if e != total] + [total]
        self.classifiers = nn.ModuleList(
            [ExitClassifier(block_width[e - 1], num_classes, classifier_channels) for e in self.exit_blocks[:-1]]
            + [FinalHead(c, num_classes)])

    @property
    def num_exits(self) -> int:
        return len(self.exit_blocks)

    def forward(self, x: Tensor, max_exit: int | None = None) -> Tensor | list[Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        k = self.num_exits if max_exit is None else int(max_exit)
        if not 1 <= k <= self.num_exits:
            raise ValueError(f"ResNet: max_exit must be in 1..{self.num_exits}, got {max_exit}")
        h = F.relu(self.stem_bn(self.stem(x)))
        outs = []
        for b in range(1, self.exit_blocks[k - 1] + 1):
            h = self.blocks[b - 1](h)
            if b == self.exit_blocks[len(outs)]:
                outs.append(self.classifiers[len(outs)](h))
        if not self.has_exits and max_exit is None:
            return outs[0]
        return outs
