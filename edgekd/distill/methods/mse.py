"""Do Deep Nets Really Need to be Deep? (Ba & Caruana, 2014): regress the teacher's logits.

Paper: https://arxiv.org/abs/1312.6184
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.distill.methods._checks import require_same_shape


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between logits, averaged over every element (as ``nn.MSELoss``).

    >>> mse_logits(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    tensor(2.)
    """
    require_same_shape("mse_logits", student_logits, teacher_logits)
    return F.mse_loss(student_logits, teacher_logits.detach())


@register_method
class MSE(Method):
    name = "mse"
    description = "Regress the teacher's logits with a mean squared error (no temperature)"
    paper = "Ba & Caruana 2014, https://arxiv.org/abs/1312.6184"
    loss_function = staticmethod(mse_logits)
    # Ba & Caruana train on the logits alone (alpha = 0); a little hard-label CE keeps the
    # student anchored when the teacher is wrong, as for kd.
    default_alpha = 0.1

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        return self.weight * mse_logits(batch.student_logits, batch.teacher_logits)
