"""Paying More Attention to Attention: Improving the Performance of Convolutional Neural Networks
via Attention Transfer (Zagoruyko & Komodakis, 2017).

Paper: https://arxiv.org/abs/1612.03928
Follows RepDistiller's ``distiller_zoo/AT.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.errors import BadInputError
from edgekd.losses._checks import require_same_batch


def _attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    # Channel mean of f^p (a sum would do: the normalisation cancels the 1/C), flattened and
    # L2-normalised per sample. Like the reference there is no abs(): with odd p, negative
    # activations count negatively.
    return F.normalize(feat.pow(p).mean(1).reshape(feat.shape[0], -1))


def at(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Squared difference of normalised spatial attention maps, averaged over batch and positions.

    Takes (B, C, H, W) maps; channel counts may differ. When spatial sizes differ, the larger map
    is adaptive-average-pooled down to the smaller one. (The reference compares heights only and
    pools to a square (H, H); we pool each side to the smaller of the two, which is the same for
    square maps.)

    >>> at(torch.ones(2, 8, 4, 4), torch.ones(2, 16, 8, 8))
    tensor(0.)
    """
    require_same_batch("at", student_feat, teacher_feat)
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise BadInputError(
            f"at: expects (B, C, H, W) feature maps, got shapes {tuple(student_feat.shape)} "
            f"and {tuple(teacher_feat.shape)}"
        )
    teacher_feat = teacher_feat.detach()
    size = (
        min(student_feat.shape[2], teacher_feat.shape[2]),
        min(student_feat.shape[3], teacher_feat.shape[3]),
    )
    if tuple(student_feat.shape[2:]) != size:
        student_feat = F.adaptive_avg_pool2d(student_feat, size)
    if tuple(teacher_feat.shape[2:]) != size:
        teacher_feat = F.adaptive_avg_pool2d(teacher_feat, size)
    diff = _attention_map(student_feat, p) - _attention_map(teacher_feat, p)
    return diff.pow(2).mean()
