"""Sizing a student to a target's budget: the largest candidate that fits every line we can check
before training (parameters, file size), and that is still a real compression of the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.errors import BadInputError
from edgekd.students import build_student, count_params, families_for, get_family
from edgekd.targets import TargetProfile

WIDTHS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
# A student must be at most this share of the teacher's parameters: otherwise it is no student.
MAX_SHARE_OF_TEACHER = 0.25


@dataclass(frozen=True)
class Candidate:
    family: str
    width: float
    depth: int
    params: int
    fp32_size_kb: float
    fits: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class SizingResult:
    chosen: Candidate
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict:
        return {
            "chosen": self.chosen.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def size_student_to_budget(
    target: TargetProfile,
    sample_shape: tuple[int, ...],
    input_kind: str,
    num_classes: int,
    teacher_params: int,
    family: str | None = None,
    depth: int = 2,
    facts: dict | None = None,
) -> SizingResult:
    """``facts`` about the data (input shapes, vocabulary size) reach the families that use them."""
    facts = facts or {}
    if family:
        fam = get_family(family)
    else:
        fitting = families_for(input_kind)
        if not fitting:
            raise BadInputError(f"no student family takes {input_kind} inputs; pass --student")
        fam = fitting[0]
    limit_params = min(target.budget.params, int(teacher_params * MAX_SHARE_OF_TEACHER))
    candidates = []
    for width in WIDTHS:
        params = count_params(
            build_student(fam.name, sample_shape, num_classes, width, depth, **facts)
        )
        size_kb = params * 4 / 1024  # fp32 weights dominate the file; int8 is about a quarter
        reasons = []
        if params > target.budget.params:
            reasons.append(f"params {params:,} > budget {target.budget.params:,}")
        if size_kb > target.budget.model_size_kb:
            reasons.append(
                f"fp32 size {size_kb:.0f} KB > budget {target.budget.model_size_kb:.0f} KB"
            )
        if params > limit_params:
            reasons.append(f"params {params:,} > {MAX_SHARE_OF_TEACHER:.0%} of the teacher's")
        candidates.append(
            Candidate(fam.name, width, depth, params, size_kb, not reasons, "; ".join(reasons))
        )
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        smallest = candidates[0]
        raise BadInputError(
            f"no {fam.name} student fits target {target.name!r}: the smallest candidate "
            f"(width {smallest.width}) has {smallest.reason}"
        )
    return SizingResult(max(fitting, key=lambda c: c.params), tuple(candidates))
