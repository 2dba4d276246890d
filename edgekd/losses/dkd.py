"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, 2022).

Paper: https://arxiv.org/abs/2203.08679
Follows mdistiller's ``dkd_loss`` in ``mdistiller/distillers/DKD.py``; its CIFAR-100 settings are
alpha=1, beta=8, T=4 (plus a cross-entropy term and a linear warm-up, which belong to the method).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.errors import BadInputError
from edgekd.losses._checks import require_same_shape


def _binary_log_probs(log_probs: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    # [log p_target, log p_others] per sample, in log space: the reference takes torch.log of
    # summed probabilities, which is -inf (and the loss inf) once a probability underflows.
    log_target = log_probs.masked_fill(~gt_mask, float("-inf")).logsumexp(dim=1)
    log_others = log_probs.masked_fill(gt_mask, float("-inf")).logsumexp(dim=1)
    return torch.stack([log_target, log_others], dim=1)


def _non_target_log_probs(scaled_logits: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    # Distribution over the non-target classes. The reference subtracts 1000 from the target
    # logit, which stops masking once |logits / T| reaches ~1000; -inf masks exactly. The target
    # entry is then set to log 1 = 0 on both sides so that it adds exp(0) * (0 - 0) = 0 to the KL.
    masked = F.log_softmax(scaled_logits.masked_fill(gt_mask, float("-inf")), dim=1)
    return masked.masked_fill(gt_mask, 0.0)


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD, each a T^2-scaled KL averaged over the batch.

    TCKD compares the binary (target vs. all others) probabilities; NCKD compares the
    distributions over the non-target classes. ``target`` holds class indices, shape (B,).

    >>> dkd(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 2]))
    tensor(0.)
    """
    require_same_shape("dkd", student_logits, teacher_logits)
    if student_logits.dim() != 2 or student_logits.shape[1] < 2:
        raise BadInputError(
            f"dkd: expects (B, C) logits with C >= 2, got shape {tuple(student_logits.shape)}"
        )
    target = target.reshape(-1)
    if target.shape[0] != student_logits.shape[0]:
        raise BadInputError(
            f"dkd: {target.shape[0]} targets for a batch of {student_logits.shape[0]} logits"
        )
    if not temperature > 0:
        raise BadInputError(f"dkd: temperature must be > 0, got {temperature}")
    t = temperature
    gt_mask = torch.zeros_like(student_logits, dtype=torch.bool)
    gt_mask.scatter_(1, target.unsqueeze(1).long(), True)
    z_student = student_logits / t
    z_teacher = teacher_logits.detach() / t

    tckd = F.kl_div(
        _binary_log_probs(F.log_softmax(z_student, dim=1), gt_mask),
        _binary_log_probs(F.log_softmax(z_teacher, dim=1), gt_mask),
        reduction="batchmean",
        log_target=True,
    )
    nckd = F.kl_div(
        _non_target_log_probs(z_student, gt_mask),
        _non_target_log_probs(z_teacher, gt_mask),
        reduction="batchmean",
        log_target=True,
    )
    return (alpha * tckd + beta * nckd) * (t * t)
