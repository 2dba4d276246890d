"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, 2022).

Paper: https://arxiv.org/abs/2203.08679
The loss follows mdistiller's ``dkd_loss`` in ``mdistiller/distillers/DKD.py``; the method follows
its ``DKD`` distiller: CE (weight 1) + warm-up * (alpha * TCKD + beta * NCKD), with warm-up
min(epoch / warmup, 1) over 1-based epochs. mdistiller's CIFAR-100 setting is alpha=1, beta=8,
T=4, warm-up 20 of 240 epochs; by default we keep that share of the run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill import DEFAULT_TEMPERATURE
from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.distill.methods._checks import require_same_shape
from edgekd.errors import BadInputError

WARMUP_SHARE = 20 / 240


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
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD, each a T^2-scaled KL averaged over the batch.

    TCKD compares the binary (target vs. all others) probabilities; NCKD compares the
    distributions over the non-target classes. ``target`` holds class indices, shape (B,).
    T > 0 is checked where a method's options are built (``edgekd.distill.MethodOptions``).

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


@register_method
class DKD(Method):
    name = "dkd"
    description = "Decoupled KD: target-class and non-target-class KL, weighted separately"
    paper = "Zhao et al. 2022, https://arxiv.org/abs/2203.08679"
    loss_function = staticmethod(dkd)
    default_alpha = 0.5  # mdistiller: CE weight 1.0 next to the DKD term
    needs_labels = True

    def __init__(
        self,
        tckd_weight: float = 1.0,
        nckd_weight: float = 8.0,
        warmup: float | None = None,
        **kw: object,
    ) -> None:
        super().__init__(**kw)
        self.tckd_weight, self.nckd_weight, self.warmup = tckd_weight, nckd_weight, warmup

    def warmup_factor(self, epoch: int, epochs: int) -> float:
        warmup = self.warmup if self.warmup is not None else max(1.0, WARMUP_SHARE * epochs)
        return min((epoch + 1) / warmup, 1.0)

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        if batch.labels is None:
            raise BadInputError("method 'dkd' needs class labels for the training data")
        t = self.temperature_at(batch.epoch, batch.epochs)
        loss = dkd(
            batch.student_logits,
            batch.teacher_logits,
            batch.labels,
            self.tckd_weight,
            self.nckd_weight,
            t,
        )
        return self.weight * self.warmup_factor(batch.epoch, batch.epochs) * loss
