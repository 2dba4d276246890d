"""Do Deep Nets Really Need to be Deep? (Ba & Caruana, 2014): regress the teacher's logits.

Paper: https://arxiv.org/abs/1312.6184
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.losses._checks import require_same_shape


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between logits, averaged over every element (as ``nn.MSELoss``).

    >>> mse_logits(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(2.)
    """
    require_same_shape("mse_logits", student_logits, teacher_logits)
    return F.mse_loss(student_logits, teacher_logits.detach())
