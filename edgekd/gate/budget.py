"""Budget lines of one model, as the gate decides them (``edgekd.gate`` owns the rules).

Kept for callers written before the gate existed; new code calls ``gate`` on a report.
"""

from __future__ import annotations

from dataclasses import replace

from edgekd.results import BudgetLine, ModelResult, Report
from edgekd.targets import TargetProfile


def budget_lines(
    target: TargetProfile, model: ModelResult, teacher: ModelResult | None = None
) -> list[BudgetLine]:
    from edgekd.gate import gate

    models = [model] + ([replace(teacher, role="teacher")] if teacher is not None else [])
    report = Report(target=target.to_dict(), host={}, models=models, chosen=model.name)
    return [line.to_budget_line() for line in gate(report, target).lines]
