"""FitNets: Hints for Thin Deep Nets (Romero et al., 2015).

Paper: https://arxiv.org/abs/1412.6550
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.losses._checks import require_same_shape


def fitnet(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Hint loss: mean squared error between (already adapted) student and teacher features.

    The regressor that maps the student's features to the teacher's shape belongs to the method,
    not here (RepDistiller's ``HintLoss`` is likewise a bare ``nn.MSELoss``), so the shapes must
    already match.

    >>> fitnet(torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
    tensor(1.)
    """
    require_same_shape("fitnet", student_feat, teacher_feat)
    return F.mse_loss(student_feat, teacher_feat.detach())
