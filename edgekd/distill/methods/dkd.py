"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, 2022).

Paper: https://arxiv.org/abs/2203.08679
Follows mdistiller's ``DKD`` distiller: CE (weight 1) + warm-up * (alpha * TCKD + beta * NCKD),
with warm-up min(epoch / warmup, 1) over 1-based epochs. mdistiller's CIFAR-100 setting is
alpha=1, beta=8, T=4, warm-up 20 of 240 epochs; by default we keep that share of the run.
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import DistillBatch, Method, register_method
from edgekd.errors import BadInputError
from edgekd.losses import dkd

WARMUP_SHARE = 20 / 240


@register_method
class DKD(Method):
    name = "dkd"
    description = "Decoupled KD: target-class and non-target-class KL, weighted separately"
    paper = "Zhao et al. 2022, https://arxiv.org/abs/2203.08679"
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
