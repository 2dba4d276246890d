"""Paying More Attention to Attention (Zagoruyko & Komodakis, 2017): attention transfer.

Paper: https://arxiv.org/abs/1612.03928
Spatial attention maps (channel mean of f^2) of each pair are matched; channel counts may differ,
spatial sizes are pooled to the smaller one. 1-D feature maps (B, C, L) are treated as 1 x L images.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import register_method
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import LayerPair, pair_error
from edgekd.losses import at


def _as_image(feat: torch.Tensor) -> torch.Tensor:
    return feat.unsqueeze(2) if feat.dim() == 3 else feat


@register_method
class AT(FeatureMethod):
    name = "at"
    description = "Attention transfer: match normalised spatial attention maps of feature maps"
    paper = "Zagoruyko & Komodakis 2017, https://arxiv.org/abs/1612.03928"
    paper_weight = 1000.0  # the paper's beta = 1e3 (RepDistiller's beta for AT)
    default_weight = 1.0  # see FeatureMethod: 1e3 swamps the CE on our few-position maps

    def __init__(self, p: float = 2.0, **kw: object) -> None:
        super().__init__(**kw)
        self.p = p

    def check_pair(self, index: int, pair: LayerPair, s_shape: tuple, t_shape: tuple) -> None:
        if len(s_shape) not in (3, 4) or len(t_shape) != len(s_shape):
            raise pair_error(
                self.name, pair, s_shape, t_shape,
                "attention transfer needs spatial feature maps of the same rank on both sides, "
                "(B, C, H, W) or (B, C, L)",
            )  # fmt: skip

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return at(_as_image(s), _as_image(t), self.p)
