"""Learning Deep Representations with Probabilistic Knowledge Transfer (Passalis & Tefas, 2018).

Paper: https://arxiv.org/abs/1803.10837
Matches the cosine-kernel conditional distributions of the samples' penultimate embeddings (the
tapped feature map, globally average-pooled), so the widths may differ.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import register_method
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import pooled
from edgekd.losses import pkt


@register_method
class PKT(FeatureMethod):
    name = "pkt"
    description = "Probabilistic KT: match cosine-similarity distributions between samples"
    paper = "Passalis & Tefas 2018, https://arxiv.org/abs/1803.10837"
    paper_weight = 30000.0  # RepDistiller's beta for PKT
    default_weight = 3000.0  # see FeatureMethod

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return pkt(pooled(s), pooled(t))
