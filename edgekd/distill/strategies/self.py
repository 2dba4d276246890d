"""Self-distillation: Born-Again Neural Networks (Furlanello et al., 2018).

Paper: https://arxiv.org/abs/1805.04770
The student has the teacher's architecture. Generation 1 learns from the teacher, generation k
from generation k - 1; the last generation is returned (the job's sized student is not used).
"""

from __future__ import annotations

from edgekd.distill.strategies import DistillJob, StrategyResult, register_strategy, with_train
from edgekd.distill.strategies._common import distill_from, fresh_like
from edgekd.errors import BadInputError
from edgekd.students import count_params


@register_strategy(
    "self",
    "Born-again networks: students with the teacher's architecture, --generations N in sequence",
    "Furlanello et al. 2018, https://arxiv.org/abs/1805.04770",
)
def self_distill(job: DistillJob) -> StrategyResult:
    if job.teacher is None:
        raise BadInputError("strategy 'self' needs a PyTorch teacher to copy the architecture of")
    teacher, generations = job.teacher, []
    for g in range(1, job.options.generations + 1):
        seed = job.train.seed + g
        student = fresh_like(job.teacher, seed)
        # Only generation 1's teacher is reused across runs: caching later ones would just
        # fill the cache with one-off entries.
        history, info = distill_from(
            teacher, student, with_train(job, seed=seed), f"generation {g}", use_cache=g == 1
        )
        generations.append({"generation": g, **info})
        teacher = student
    return StrategyResult(
        teacher,
        history,
        {
            "teacher_signal": generations[0]["teacher_signal"],
            "generations": generations,
            "student_params": count_params(teacher),
            "note": "the student has the teacher's architecture; the sized student is not used",
        },
    )
