"""LeNet for 28x28 images, as in the benchmark (a LeNet-5-style CNN with ReLU and max pooling).

    input (N, 1, 28, 28)
    conv1  5x5, 1 -> 32, no padding     (N, 32, 24, 24)   ReLU
    pool   max 2x2, stride 2            (N, 32, 12, 12)
    conv2  5x5, 32 -> 64, no padding    (N, 64, 8, 8)     ReLU
    pool   max 2x2, stride 2            (N, 64, 4, 4)
    flatten                             (N, 1024)
    fc1    1024 -> 128                  (N, 128)          ReLU
    fc2    128 -> 10                    (N, 10)           logits (feed to cross_entropy)

Layer names (``conv1``, ``conv2``, ``fc1``, ``fc2``) match the usual PyTorch definition, so a PyTorch
``state_dict`` with those names loads directly.
"""

from __future__ import annotations

from handgrad import nn
from handgrad.engine.tensor import Tensor


class LeNet(nn.Module):
    """conv5x5(1->32)-ReLU-maxpool2 - conv5x5(32->64)-ReLU-maxpool2 - fc(1024->128)-ReLU - fc(128->classes).

    ``dropout`` > 0 adds dropout before ``fc2`` (0 by default: the benchmark network has none).
    Input ``(N, in_channels, 28, 28)``; output ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LeNet: dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2:] != (28, 28):
            raise ValueError(
                f"LeNet: expected input (N, {self.in_channels}, 28, 28), got {x.shape}"
            )
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        x = self.fc1(x.flatten(1)).relu()
        if self.drop is not None:
            x = self.drop(x)
        return self.fc2(x)
