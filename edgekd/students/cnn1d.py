"""1-D CNN for sequences (channels x length), e.g. MNIST-1D."""

from __future__ import annotations

from torch import nn

from edgekd.students import register_student


class SeqNet(nn.Module):
    def __init__(self, features: nn.Sequential, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c_out, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


@register_student("cnn1d", ("sequence",), "1-D conv net (kernel 5), width x 16 channels")
def cnn1d(
    sample_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 2
) -> nn.Module:
    c_in, length = sample_shape[0], sample_shape[-1]
    c = max(4, round(16 * width))
    layers: list[nn.Module] = []
    for i in range(depth + 1):
        stride = 2 if i > 0 and length >= 8 else 1
        layers += [nn.Conv1d(c_in if i == 0 else c, c, 5, stride, 2), nn.BatchNorm1d(c), nn.ReLU()]
        length = length // stride
    return SeqNet(nn.Sequential(*layers), c, num_classes)
