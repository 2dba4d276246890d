"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015), per token.

Token-level forward KL for causal language models: at every position the student's next-token
distribution is pulled towards the teacher's, KL(teacher || student) at temperature T, as
DistilBERT and DistilGPT2 were trained (Sanh et al. 2019). Mode-covering: the student spreads
mass over everything the teacher finds plausible.

Paper: https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import DistillBatch, register_method
from edgekd.distill.methods._checks import require_same_shape
from edgekd.distill.methods._tokens import TokenMethod, log_probs, token_mean, token_views


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * sum_v p(v) (log p(v) - log q(v)), p = softmax(teacher / T), q = softmax(student / T),
    averaged over the positions (those where ``mask`` is true). Logits [..., V].

    >>> forward_kl(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    tensor(0.)
    """
    require_same_shape("forward_kl", student_logits, teacher_logits)
    log_q = log_probs(student_logits, temperature)
    log_p = log_probs(teacher_logits.detach(), temperature)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    return temperature * temperature * token_mean(per_token, mask)


@register_method
class FKL(TokenMethod):
    name = "fkl"
    description = "Language models: per-token forward KL(teacher || student) at temperature T"
    paper = "Hinton et al. 2015, https://arxiv.org/abs/1503.02531"
    loss_function = staticmethod(forward_kl)
    default_alpha = 0.1  # as kd: a small weight on the next-token cross-entropy

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = token_views(batch)
        t = self.temperature_at(batch.epoch, batch.epochs)
        return self.weight * forward_kl(student, teacher, t, batch.mask)
