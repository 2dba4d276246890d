"""Do Deep Nets Really Need to be Deep? (Ba & Caruana, 2014): regress the teacher's logits.

Paper: https://arxiv.org/abs/1312.6184
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.losses import mse_logits


@register_method
class MSE(Method):
    name = "mse"
    description = "Regress the teacher's logits with a mean squared error (no temperature)"
    paper = "Ba & Caruana 2014, https://arxiv.org/abs/1312.6184"
    # Ba & Caruana train on the logits alone (alpha = 0); a little hard-label CE keeps the
    # student anchored when the teacher is wrong, as for kd.
    default_alpha = 0.1

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        return self.weight * mse_logits(batch.student_logits, batch.teacher_logits)
