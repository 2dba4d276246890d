"""``edgekd gate`` on a causal-LM report (``"task": "causal-lm"``, written by ``edgekd.lm``).

The lines are the target's ``[lm]`` budget (``edgekd.lm.bench.budget_lines``) over the report's
``student`` row: decode time per token and time to first token (p95 of the benchmark's runs on the
host that wrote the report), peak memory at the context, file size, and the perplexity increase
over the teacher. A figure the run did not take is NOT MEASURED (with why), as on the classifier
path, and counts only under ``--require``. The target is the profile the run stored
(``target_lm``) unless one is given.

Not yet: the classifier gate's statistics. The LM benchmark keeps only p95 figures, not the
per-process samples, so a line is judged on its stored figure (no interval, no re-measuring) and
regression checks against a baseline report are refused rather than guessed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict
from edgekd.gate.lines import GateLine, GateResult
from edgekd.targets import LMBudget, TargetProfile, load_target

LM_LINES = ("decode_ms_per_token", "ttft_ms", "memory_mb", "model_size_mb", "perplexity_increase")
_WHY_MISSING = {
    "memory_mb": "the benchmark did not measure peak memory for this model",
    "perplexity_increase": "no teacher perplexity in the report (a black-box teacher)",
}


def lm_report(report: Any) -> dict[str, Any] | None:
    """The report's JSON when ``report`` is a path to a causal-LM report; None otherwise (the
    classifier path then reads and checks it)."""
    if not isinstance(report, str | Path):
        return None
    try:
        data = json.loads(Path(report).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("task") == "causal-lm" else None


def gate_lm(
    data: dict[str, Any],
    where: str,
    target: TargetProfile | str | None = None,
    only: Sequence[str] | None = None,
    require: Sequence[str] | None = None,
) -> GateResult:
    """Judge the student of a causal-LM report against its target's ``[lm]`` lines."""
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
    notes.append("causal-LM report: each line is judged on its stored p95 figure (no interval)")
    return GateResult(name, tuple(lines), tuple(notes), None, 0.0, where)


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
