"""Similarity-Preserving Knowledge Distillation (Tung & Mori, 2019).

Paper: https://arxiv.org/abs/1907.09682
Compares the batch's pairwise-similarity (Gram) matrices of the flattened activations, so the
two layers may have any widths and spatial sizes.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import register_method
from edgekd.distill.methods._features import FeatureMethod
from edgekd.losses import sp


@register_method
class SP(FeatureMethod):
    name = "sp"
    description = "Similarity-preserving: match the batch's pairwise activation similarities"
    paper = "Tung & Mori 2019, https://arxiv.org/abs/1907.09682"
    paper_weight = 3000.0  # the paper's gamma for CIFAR-10 (RepDistiller's beta for SP)
    default_weight = 30.0  # see FeatureMethod

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sp(s, t)
