"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015).

Paper: https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.losses import kd


@register_method
class KD(Method):
    name = "kd"
    description = "Soft targets at temperature T (T^2-scaled KL) plus hard-label CE"
    paper = "Hinton et al. 2015, https://arxiv.org/abs/1503.02531"
    # Hinton et al. put "a considerably lower weight" on the hard-label term; 0.1 / 0.9 is the
    # split RepDistiller uses for KD (gamma=0.1, alpha=0.9).
    default_alpha = 0.1

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        t = self.temperature_at(batch.epoch, batch.epochs)
        return self.weight * kd(batch.student_logits, batch.teacher_logits, t)
