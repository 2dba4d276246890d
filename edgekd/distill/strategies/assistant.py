"""Multi-stage distillation through a teacher assistant (Mirzadeh et al., 2020).

Paper: https://arxiv.org/abs/1902.03393
Teacher -> assistant -> student. The assistant has the student's family and is sized between the
two automatically: depth halfway between theirs (when the teacher is of the same family), width
chosen so that its parameter count is nearest the geometric mean of the teacher's and the
student's (Mirzadeh et al. find an assistant of intermediate size best; halfway on a log scale
is the middle of the size ratio).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.distill.strategies import DistillJob, StrategyResult, register_strategy, with_train
from edgekd.distill.strategies._common import distill_from
from edgekd.errors import BadInputError
from edgekd.students import build_student, count_params

WIDTH_STEPS = 48  # geometric grid of candidate widths between the student's and 16x it


def size_assistant(student: nn.Module, teacher: nn.Module) -> dict:
    """The assistant's (family, width, depth) and parameter count, between student and teacher."""
    arch = getattr(student, "edgekd_arch", None)
    if arch is None:
        raise BadInputError(
            "strategy 'assistant' needs a student built by edgekd (its family and knobs are used "
            "to size the assistant)"
        )
    p_s, p_t = count_params(student), count_params(teacher)
    if p_t <= p_s:
        raise BadInputError(
            f"strategy 'assistant': the teacher ({p_t:,} parameters) is not larger than the "
            f"student ({p_s:,}); there is no size in between"
        )
    t_arch = getattr(teacher, "edgekd_arch", None) or {}
    depth = arch["depth"]
    if t_arch.get("family") == arch["family"]:
        depth = math.ceil((arch["depth"] + t_arch["depth"]) / 2)
    goal = math.sqrt(p_s * p_t)
    best = None
    for i in range(WIDTH_STEPS + 1):
        width = round(arch["width"] * 16 ** (i / WIDTH_STEPS), 4)
        params = count_params(
            build_student(
                arch["family"],
                tuple(arch["sample_shape"]),
                arch["num_classes"],
                width,
                depth,
                view=arch.get("view"),
            )
        )
        if not p_s < params < p_t:
            continue
        score = abs(math.log(params / goal))
        if best is None or score < best[0]:
            best = (score, width, params)
    if best is None:
        raise BadInputError(
            f"strategy 'assistant': no {arch['family']} of depth {depth} has between {p_s:,} and "
            f"{p_t:,} parameters"
        )
    _, width, params = best
    return {"family": arch["family"], "width": width, "depth": depth, "params": params}


@register_strategy(
    "assistant",
    "Teacher -> assistant of intermediate size -> student, the assistant sized automatically",
    "Mirzadeh et al. 2020, https://arxiv.org/abs/1902.03393",
)
def assistant(job: DistillJob) -> StrategyResult:
    if job.teacher is None:
        raise BadInputError("strategy 'assistant' needs a PyTorch teacher")
    knobs = size_assistant(job.student, job.teacher)
    arch = job.student.edgekd_arch
    torch.manual_seed(job.train.seed + 1)
    helper = build_student(
        knobs["family"], tuple(arch["sample_shape"]), arch["num_classes"],
        knobs["width"], knobs["depth"], view=arch.get("view"),
    )  # fmt: skip
    _, first = distill_from(job.teacher, helper, with_train(job, seed=job.train.seed + 1), "assist")
    # The assistant is trained now, so its logits are not worth caching across runs.
    history, second = distill_from(helper, job.student, job, "distill", use_cache=False)
    return StrategyResult(
        job.student,
        history,
        {
            "teacher_signal": first["teacher_signal"],
            "assistant": {**knobs, **first},
            "student_stage": second,
            "params": {
                "teacher": count_params(job.teacher),
                "assistant": knobs["params"],
                "student": count_params(job.student),
            },
        },
    )
