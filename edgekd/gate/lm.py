"""``edgekd gate`` on a causal-LM report (``"task": "causal-lm"``, written by ``edgekd.lm``).

The lines are the target's ``[lm]`` budget (``edgekd.lm.bench.budget_lines``) over the report's
``student`` row: decode time per token and time to first token (p95 of the benchmark's runs on the
host that wrote the report), peak memory at the context, file size, and the perplexity increase
over the teacher. A figure the run did not take is NOT MEASURED (with why), as on the classifier
path, and counts only under ``--require``. The target is the profile the run stored
(``target_lm``) unless one is given.

A budget line is judged on its stored p95 figure (no interval, no re-measuring). Against a
baseline causal-LM report (``--baseline``), the regression lines of ``edgekd.gate.lm_baseline``
are added: latency with the classifier gate's statistics over the benchmark's per-repeat samples,
perplexity, agreement and size compared directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict
from edgekd.gate.lines import DEFAULT_THRESHOLD, GateLine, GateResult
from edgekd.gate.lm_baseline import REGRESSION_LINES, regression_lines
from edgekd.targets import LMBudget, TargetProfile, load_target

LM_LINES = ("decode_ms_per_token", "ttft_ms", "memory_mb", "model_size_mb", "perplexity_increase",
            *REGRESSION_LINES)  # fmt: skip
_WHY_MISSING = {
    "memory_mb": "the benchmark did not measure peak memory for this model",
    "perplexity_increase": "no teacher perplexity in the report (a black-box teacher)",
}


def gate_lm(
    data: dict[str, Any],
    where: str,
    target: TargetProfile | str | None = None,
    only: Sequence[str] | None = None,
    require: Sequence[str] | None = None,
    baseline: dict[str, Any] | None = None,
    baseline_where: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = 0.01,
    agreement_tolerance: float = 0.01,
    any_host: bool = False,
) -> GateResult:
    """Judge the student of a causal-LM report against its target's ``[lm]`` lines, and against
    the student of ``baseline`` (a causal-LM report's JSON) when one is given."""
    from edgekd.lm.bench import budget_lines

    budget, name = _budget(data, where, target)
    rows = {m.get("name"): m for m in data.get("models") or [] if isinstance(m, dict)}
    if "student" not in rows:
        raise BadInputError(f"{where}: no 'student' row in field 'models': nothing to gate")
    teacher = rows.get("teacher", {}).get("perplexity")
    row = SimpleNamespace(**{k: rows["student"].get(k) for k in (
        "size_bytes", "perplexity", "decode_p95_ms", "ttft_p95_ms", "peak_memory_mb")})  # fmt: skip
    if row.perplexity is None:
        teacher = None
    lines = [_gate_line(line) for line in budget_lines(row, budget, teacher)]
    notes: list[str] = []
    if baseline is not None:
        more, notes = regression_lines(data, where, baseline, baseline_where or "baseline",
                                       threshold, alpha, agreement_tolerance, any_host=any_host)
        lines += more
    for wanted in (only, require):
        unknown = sorted(set(wanted or ()) - set(LM_LINES))
        if unknown:
            raise BadInputError(
                f"unknown line {unknown[0]!r} for a causal-LM report; its lines: "
                f"{', '.join(LM_LINES)}"
            )
    if only:
        notes += [f"{line.name}: not checked (--only)" for line in lines if line.name not in only]
        lines = [line for line in lines if line.name in only]
    lines = [_required(line) if line.name in (require or ()) else line for line in lines]
    if not lines:
        notes.append(f"target {name!r} sets no [lm] budget line: nothing to check")
    notes.append("causal-LM report: each budget line is judged on its stored p95 figure "
                 "(no interval)")
    return GateResult(name, tuple(lines), tuple(notes), baseline_where if baseline else None,
                      threshold if baseline else 0.0, where)


def _budget(data: dict[str, Any], where: str, target: TargetProfile | str | None):
    if target is not None:
        profile = load_target(target) if isinstance(target, str) else target
        return profile.lm, profile.name
    stored = data.get("target_lm")
    if not isinstance(stored, dict):
        raise BadInputError(
            f"{where}: field 'target_lm' is missing: give the target (edgekd gate REPORT --target "
            "NAME)"
        )
    known = {k: v for k, v in stored.items() if k in LMBudget.__dataclass_fields__}
    problems = LMBudget.field_problems(known)
    if problems:
        field, message = problems[0]
        raise BadInputError(f"{where}: field 'target_lm.{field}' {message}")
    return LMBudget(**known), str(data.get("target", "stored"))


def _gate_line(line) -> GateLine:
    if line.value is None:
        verdict, reason = Verdict.NOT_MEASURED, _WHY_MISSING.get(line.name, "not measured")
    else:
        verdict = Verdict.PASS if line.value <= line.limit else Verdict.FAIL
        reason = f"{line.value:.4g}{line.unit} {'<=' if verdict == Verdict.PASS else '>'} " \
                 f"{line.limit:g}{line.unit}"  # fmt: skip
    return GateLine(
        name=line.name, value=line.value, limit=line.limit, unit=line.unit, kind=line.kind,
        model="student", verdict=verdict, detail="stored figure of the LM benchmark",
        reason=reason,
    )  # fmt: skip


def _required(line: GateLine) -> GateLine:
    if line.verdict != Verdict.NOT_MEASURED:
        return line
    from dataclasses import replace

    return replace(line, verdict=Verdict.INCONCLUSIVE, reason=f"required, but {line.reason}")
