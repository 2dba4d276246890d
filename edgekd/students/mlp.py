"""Multi-layer perceptron for flat feature vectors (and anything that can be flattened)."""

from __future__ import annotations

import math

from torch import nn

from edgekd.students import register_student


@register_student(
    "mlp", ("vector", "image", "sequence"), "MLP: Linear-ReLU blocks, width x 64 units"
)
def mlp(
    sample_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 2
) -> nn.Module:
    n_in = math.prod(sample_shape)
    hidden = max(4, round(64 * width))
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU()]
    return MLP(nn.Sequential(*layers), nn.Linear(hidden if depth else n_in, num_classes))


class MLP(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))
