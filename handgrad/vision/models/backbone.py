"""The small CNN that R-CNN and Fast R-CNN share on the generated scenes, and its crop classifier.

``SceneBackbone``: conv 5x5/2 (32) - BN - ReLU - max-pool 2 - conv 3x3 (64) - BN - ReLU - max-pool 2 -
conv 3x3 (128) - BN - ReLU - conv 3x3 (128) - BN - ReLU: stride 8, 128 channels, receptive field 51 px
(the scenes' objects are 16..96 px). Small enough to train on 2 CPU cores; a 256x256 image costs ~0.34 GMAC.

``CropClassifier``: the backbone, global average pooling and a linear layer: the "CNN pre-trained as a
classifier" of R-CNN, trained on object crops and background crops (class 0), whose backbone Fast R-CNN
then starts from (the role ImageNet pre-training plays in the papers).
"""

from __future__ import annotations

import numpy

import handgrad.nn as nn
from handgrad.engine.tensor import Tensor

__all__ = ["SceneBackbone", "CropClassifier", "normalize_image", "SCENE_MEAN", "SCENE_STD"]

# Per-channel mean and std of the scenes' pixels / 255 (measured on 200 train scenes; rounded).
SCENE_MEAN = numpy.array([0.47, 0.45, 0.41], dtype=numpy.float32)
SCENE_STD = numpy.array([0.26, 0.25, 0.27], dtype=numpy.float32)


def normalize_image(img: numpy.ndarray) -> numpy.ndarray:
    """``uint8 (H, W, 3) -> float32 (3, H, W)``: ``(pixel / 255 - mean) / std`` per channel."""
    x = numpy.asarray(img, dtype=numpy.float32) / 255.0
    return ((x - SCENE_MEAN) / SCENE_STD).transpose(2, 0, 1).copy()


class SceneBackbone(nn.Module):
    """``(N, 3, H, W) -> (N, 128, H/8, W/8)`` feature maps."""

    stride = 8

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        a, b, c = widths
        self.out_channels = c
        # batch norm after every conv: trains from scratch in far fewer steps on 2 CPU cores
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(a), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class CropClassifier(nn.Module):
    """``(N, 3, s, s) -> (N, num_classes)`` logits (class 0 = background); ``features`` gives the pooled
    ``(N, 128)`` vector (R-CNN's feature for its SVMs and box regressors)."""

    def __init__(self, num_classes: int, backbone: SceneBackbone | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else SceneBackbone()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.backbone(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
