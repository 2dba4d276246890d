"""Image CNNs: a plain/residual 3x3 conv net and a MobileNet-style depthwise-separable net.

MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications (Howard et al.
2017), https://arxiv.org/abs/1704.04861
"""

from __future__ import annotations

from torch import nn

from edgekd.students import register_student


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.residual = residual and stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y + x if self.residual else y)


class DepthwiseSeparable(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.bn2(self.pw(self.act(self.bn1(self.dw(x))))))


class ImageNet(nn.Module):
    """Stem, ``depth`` blocks (channels double, resolution halves every 2nd block), pool, fc."""

    def __init__(self, blocks: nn.Sequential, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.features = blocks
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


def _plan(sample_shape: tuple[int, ...], width: float, depth: int) -> list[tuple[int, int, int]]:
    """(c_in, c_out, stride) per block after the stem; never shrinks the map below 2x2."""
    c = max(4, round(16 * width))
    size = min(sample_shape[1:])
    plan = []
    for i in range(depth):
        down = i % 2 == 1 and size >= 4
        c_out = c * 2 if down else c
        plan.append((c, c_out, 2 if down else 1))
        size = size // 2 if down else size
        c = c_out
    return plan


def _stem(sample_shape: tuple[int, ...], width: float, stride: int = 1) -> list[nn.Module]:
    c = max(4, round(16 * width))
    return [nn.Conv2d(sample_shape[0], c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]


def _after_stem(sample_shape: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """The feature map's shape after a stem of this stride (3x3, padding 1)."""
    return (sample_shape[0], *((side - 1) // stride + 1 for side in sample_shape[1:]))


@register_student(
    "cnn", ("image",), "Plain/residual 3x3 conv net, width x 16 channels", depths=(2, 3, 4)
)
def cnn(
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    residual: bool = True,
    stem_stride: int = 1,
) -> nn.Module:
    # stem_stride 2 halves the map before any block (the default teacher on larger images,
    # edgekd.teacher.default): every block then costs a quarter
    plan = _plan(_after_stem(sample_shape, stem_stride), width, depth)
    blocks = _stem(sample_shape, width, stem_stride) + [
        ConvBlock(a, b, s, residual) for a, b, s in plan
    ]
    c_out = plan[-1][1] if plan else max(4, round(16 * width))
    return ImageNet(nn.Sequential(*blocks), c_out, num_classes)


@register_student(
    "mobilenet",
    ("image",),
    "MobileNet-style depthwise-separable conv net",
    depths=(2, 3, 4, 6),
)
def mobilenet(
    sample_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 2
) -> nn.Module:
    plan = _plan(sample_shape, width, depth)
    blocks = _stem(sample_shape, width) + [DepthwiseSeparable(a, b, s) for a, b, s in plan]
    c_out = plan[-1][1] if plan else max(4, round(16 * width))
    return ImageNet(nn.Sequential(*blocks), c_out, num_classes)
