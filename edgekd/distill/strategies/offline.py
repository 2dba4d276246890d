"""Offline distillation: a frozen, pre-trained teacher (Hinton et al. 2015's setting).

This is the one path of a frozen-teacher run (``edgekd distill``'s default, ``--seeds`` and
``edgekd tune`` run it too). For logit methods without augmentation the teacher's outputs over the
training split are computed once (with the teacher, ``edgekd.teacher.prepare``, or from the output
cache, ``edgekd.teacher.outputs``), so an epoch costs about what training the student alone costs.
Methods that tap teacher layers, and augmented views (consistent teaching, Beyer et al. 2022,
``edgekd.distill.views``), run the teacher live instead (no gradients). The best epoch is kept.
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
    history, info = distill_from(
        job.teacher, job.student, job, "distill", outputs=job.outputs,
        checkpoint=job.single_stage(),
    )  # fmt: skip
    return StrategyResult(job.student, history, info)
