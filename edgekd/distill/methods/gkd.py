"""On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes
(Agarwal, Vieillard, Zhou, Stanczyk, Garea, Geist & Bachem, ICLR 2024): GKD.

Two ideas: (1) the generalized Jensen-Shannon divergence JSD(beta) between teacher P and student
Q, which moves between forward KL (small beta, scaled) and reverse KL (beta -> 1); (2) training
partly on sequences the student samples itself (a share ``on_policy`` of the steps, the paper's
lambda), scored by the live teacher, so the student learns from the states its own mistakes lead
to. The training loop (``edgekd.lm.train``) draws those samples; this file holds the divergence.

Paper: https://arxiv.org/abs/2306.13649
"""

from __future__ import annotations

import math

import torch

from edgekd.distill.methods import DistillBatch, register_method
from edgekd.distill.methods._checks import require_same_shape
from edgekd.distill.methods._tokens import TokenMethod, log_probs, token_mean, token_views
from edgekd.errors import BadInputError

DEFAULT_BETA = 0.5
# The paper's lambda: on-policy only (1.0) was best on most of its tasks, mixed (0.5) close;
# 0.5 halves the cost of sampling from the student on a CPU.
DEFAULT_ON_POLICY = 0.5


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = DEFAULT_BETA,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q
    (GKD, eq. 3), P the teacher's and Q the student's softmax at T, averaged over positions.
    Needs 0 < beta < 1; beta = 0.5 is the symmetric Jensen-Shannon divergence.

    >>> generalized_jsd(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor(0.)
    """
    require_same_shape("generalized_jsd", student_logits, teacher_logits)
    if not 0.0 < beta < 1.0:
        raise BadInputError(f"generalized_jsd: beta must be in (0, 1), got {beta}")
    log_q = log_probs(student_logits, temperature)
    log_p = log_probs(teacher_logits.detach(), temperature)
    log_m = torch.logsumexp(
        torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0
    )
    kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
    per_token = beta * kl_p + (1.0 - beta) * kl_q
    return temperature * temperature * token_mean(per_token, mask)


@register_method
class GKD(TokenMethod):
    name = "gkd"
    description = (
        "Language models: generalized JSD(beta) on a mix of corpus and student-sampled sequences"
    )
    paper = "Agarwal et al. 2024 (GKD), https://arxiv.org/abs/2306.13649"
    loss_function = staticmethod(generalized_jsd)
    default_alpha = 0.0  # GKD trains on the divergence alone
    # The run options this method reads: DistillConfig field (and flag) -> constructor argument.
    # The flag says whose beta it is (--gkd-beta; DKD has a beta too), the paper calls it beta.
    run_options = {"gkd_beta": "beta", "on_policy": "on_policy"}

    def __init__(
        self, beta: float = DEFAULT_BETA, on_policy: float = DEFAULT_ON_POLICY, **options: object
    ) -> None:
        super().__init__(**options)
        if not 0.0 < beta < 1.0 or not 0.0 <= on_policy <= 1.0:
            raise BadInputError(
                f"gkd: beta must be in (0, 1) and on_policy in [0, 1], got {beta}, {on_policy}"
            )
        self.beta, self.on_policy = float(beta), float(on_policy)

    def describe(self) -> dict:
        return {**super().describe(), "beta": self.beta, "on_policy": self.on_policy}

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = token_views(batch)
        t = self.temperature_at(batch.epoch, batch.epochs)
        return self.weight * generalized_jsd(student, teacher, self.beta, t, batch.mask)
