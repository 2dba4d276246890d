"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015).

Paper: https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.errors import BadInputError
from edgekd.losses._checks import require_same_shape


def kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    The T^2 factor keeps the gradient magnitude of the soft term comparable to the hard-label term
    as T changes (Hinton et al., section 2). Gradients flow to the student only.

    >>> kd(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor(0.)
    """
    require_same_shape("kd", student_logits, teacher_logits)
    if not temperature > 0:
        raise BadInputError(f"kd: temperature must be > 0, got {temperature}")
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p * (log p - log q); both stay
    # finite for finite logits, so this never meets 0 * log 0.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)
