"""Offline distillation: a frozen, pre-trained teacher (Hinton et al. 2015's setting).

The teacher's logits over the training split are computed once and cached on disk, keyed by the
teacher's weights and the data, so an epoch costs about what training the student alone costs.
Methods that tap teacher layers run the teacher live instead (no gradients).
"""

from __future__ import annotations

from edgekd.distill.strategies import DistillJob, StrategyResult, register_strategy
from edgekd.distill.strategies._common import distill_from
from edgekd.errors import BadInputError


@register_strategy(
    "offline",
    "Frozen teacher; its logits over the training set computed once and cached on disk",
    "Hinton et al. 2015, https://arxiv.org/abs/1503.02531",
)
def offline(job: DistillJob) -> StrategyResult:
    if job.teacher is None:
        raise BadInputError("strategy 'offline' needs a PyTorch teacher (use --strategy blackbox)")
    history, info = distill_from(job.teacher, job.student, job, "distill")
    return StrategyResult(job.student, history, info)
