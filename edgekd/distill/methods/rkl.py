"""MiniLLM: Knowledge Distillation of Large Language Models (Gu, Dong, Wei & Huang, ICLR 2024).

Reverse KL, KL(student || teacher): mode-seeking, so a small student puts its mass on the
teacher's main modes instead of spreading it over the long tail it cannot model. MiniLLM
minimises the sequence-level reverse KL with a policy gradient over sampled responses; this is
its token-level form on the training sequences (the objective GKD calls reverse KL, their
JSD(beta -> 1) limit), without the policy-gradient sampling, single-step decomposition or
teacher-mixed sampling of the paper.

Paper: https://arxiv.org/abs/2306.08543
"""

from __future__ import annotations

import torch

from edgekd.distill.methods import DistillBatch, register_method
from edgekd.distill.methods._checks import require_same_shape
from edgekd.distill.methods._tokens import TokenMethod, log_probs, token_mean, token_views


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * sum_v q(v) (log q(v) - log p(v)), q the student's, p the teacher's softmax at T,
    averaged over the positions (those where ``mask`` is true). Logits [..., V].

    >>> reverse_kl(torch.zeros(3, 5), torch.zeros(3, 5))
    tensor(0.)
    """
    require_same_shape("reverse_kl", student_logits, teacher_logits)
    log_q = log_probs(student_logits, temperature)
    log_p = log_probs(teacher_logits.detach(), temperature)
    per_token = (log_q.exp() * (log_q - log_p)).sum(-1)
    return temperature * temperature * token_mean(per_token, mask)


@register_method
class RKL(TokenMethod):
    name = "rkl"
    description = "Language models: per-token reverse KL(student || teacher), mode-seeking"
    paper = "Gu et al. 2024 (MiniLLM), https://arxiv.org/abs/2306.08543"
    loss_function = staticmethod(reverse_kl)
    default_alpha = 0.1

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = token_views(batch)
        t = self.temperature_at(batch.epoch, batch.epochs)
        return self.weight * reverse_kl(student, teacher, t, batch.mask)
