"""Relational Knowledge Distillation (Park, Kim, Lu & Cho, 2019).

Paper: https://arxiv.org/abs/1904.05068
Distance- and angle-wise relations between the samples' penultimate embeddings: the tapped feature
map, globally average-pooled as our heads do before the classifier.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import register_method
from edgekd.distill.methods._features import FeatureMethod
from edgekd.distill.pairing import pooled
from edgekd.losses import rkd


@register_method
class RKD(FeatureMethod):
    name = "rkd"
    description = "Relational KD: match distances and angles between samples' embeddings"
    paper = "Park et al. 2019, https://arxiv.org/abs/1904.05068"
    # The paper's lambda_D = 25 and lambda_A = 50 are inside the loss, with weight 1.
    paper_weight = 1.0
    default_weight = 0.03  # see FeatureMethod

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0, **kw) -> None:
        super().__init__(**kw)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if s.shape[0] < 2:  # a last batch of one sample has no relations to match
            return s.sum() * 0.0
        return rkd(pooled(s), pooled(t), self.distance_weight, self.angle_weight)
