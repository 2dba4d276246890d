"""An MLP over several inputs: each flattened, cast to float and concatenated."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.students import register_student


class ConcatMLP(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat([t.flatten(1).to(torch.float32) for t in inputs], dim=1)
        return self.head(self.features(x))


@register_student("concat_mlp", ("multi",), "MLP over all inputs flattened and joined (width x 64)")
def concat_mlp(
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    input_shapes: list[list[int]] | None = None,
) -> nn.Module:
    n_in = sum(math.prod(s) for s in input_shapes) if input_shapes else math.prod(sample_shape)
    hidden = max(4, round(64 * width))
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU()]
    return ConcatMLP(nn.Sequential(*layers), nn.Linear(hidden if depth else n_in, num_classes))
