"""Similarity-Preserving Knowledge Distillation (Tung & Mori, 2019).

Paper: https://arxiv.org/abs/1907.09682
The loss follows RepDistiller's ``distiller_zoo/SP.py``. The method compares the batch's
pairwise-similarity (Gram) matrices of the flattened activations, so the two layers may have any
widths and spatial sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import register_method
from edgekd.distill.methods._checks import require_same_batch
from edgekd.distill.methods._features import FeatureMethod


def _similarity(feat: torch.Tensor) -> torch.Tensor:
    flat = feat.reshape(feat.shape[0], -1)
    # Each row of the B x B Gram matrix is L2-normalised (the paper's row-wise normalisation);
    # F.normalize's eps keeps all-zero rows at zero instead of 0/0.
    return F.normalize(flat @ flat.t())


def sp(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of row-normalised batch similarity matrices, divided by B^2.

    Inputs are flattened to (B, -1), so student and teacher may have different feature sizes.

    >>> sp(torch.eye(2), torch.eye(2))
    tensor(0.)
    """
    require_same_batch("sp", student_feat, teacher_feat)
    b = student_feat.shape[0]
    diff = _similarity(teacher_feat.detach()) - _similarity(student_feat)
    return diff.pow(2).sum() / (b * b)


@register_method
class SP(FeatureMethod):
    name = "sp"
    description = "Similarity-preserving: match the batch's pairwise activation similarities"
    paper = "Tung & Mori 2019, https://arxiv.org/abs/1907.09682"
    loss_function = staticmethod(sp)
    paper_weight = 3000.0  # the paper's gamma for CIFAR-10 (RepDistiller's beta for SP)
    default_weight = 30.0  # see FeatureMethod

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sp(s, t)
