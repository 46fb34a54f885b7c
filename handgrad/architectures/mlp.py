"""Multi-layer perceptron for flattened images: ``in -> hidden... -> out`` with ReLU (and optional dropout).

Default 784-256-128-10 (Fashion-MNIST). Any input ``(N, *)`` is flattened to ``(N, in_features)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from handgrad import nn
from handgrad.engine.tensor import Tensor


class MLP(nn.Module):
    """``y = W_L relu(... relu(W_1 x + b_1) ...) + b_L``, dropout after each hidden ReLU when ``dropout > 0``.

    Input ``(N, *)`` with ``prod(*) == in_features``; output ``(N, out_features)`` logits. Linear layers are
    ``layers.0``, ``layers.1``, ... (a ``ModuleList``), so the state_dict keys are ``layers.<i>.weight``.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (256, 128),
        out_features: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}")
        sizes = [in_features, *hidden, out_features]
        if any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"MLP: layer sizes must be positive integers, got {sizes}")
        self.in_features = in_features
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.numel() // max(x.shape[0], 1) != self.in_features:
            raise ValueError(f"MLP: expected input (N, *) with {self.in_features} features per sample, got {x.shape}")
        x = x.reshape(x.shape[0], self.in_features)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()
                if self.drop is not None:
                    x = self.drop(x)
        return x
