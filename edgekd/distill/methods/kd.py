"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015).

Paper: https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill import DEFAULT_TEMPERATURE
from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.distill.methods._checks import require_same_shape


def kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    The T^2 factor keeps the gradient magnitude of the soft term comparable to the hard-label term
    as T changes (Hinton et al., section 2). Gradients flow to the student only. T > 0 is checked
    once, where a method's options are built (``edgekd.distill.MethodOptions``), not per step.

    >>> kd(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor(0.)
    """
    require_same_shape("kd", student_logits, teacher_logits)
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p * (log p - log q); both stay
    # finite for finite logits, so this never meets 0 * log 0.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


@register_method
class KD(Method):
    name = "kd"
    description = "Soft targets at temperature T (T^2-scaled KL) plus hard-label CE"
    paper = "Hinton et al. 2015, https://arxiv.org/abs/1503.02531"
    loss_function = staticmethod(kd)
    # Hinton et al. put "a considerably lower weight" on the hard-label term; 0.1 / 0.9 is the
    # split RepDistiller uses for KD (gamma=0.1, alpha=0.9).
    default_alpha = 0.1

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        t = self.temperature_at(batch.epoch, batch.epochs)
        return self.weight * kd(batch.student_logits, batch.teacher_logits, t)
