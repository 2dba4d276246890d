"""Similarity-Preserving Knowledge Distillation (Tung & Mori, 2019).

Paper: https://arxiv.org/abs/1907.09682
Follows RepDistiller's ``distiller_zoo/SP.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.losses._checks import require_same_batch


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
