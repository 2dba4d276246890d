"""``edgekd gate`` on a causal-LM report (``"task": "causal-lm"``, written by ``edgekd.lm``).

The lines are the target's ``[lm]`` budget (``edgekd.lm.bench.budget_lines``) over the report's
``student`` row: decode time per token and time to first token (p95 on the host that wrote the
report), peak memory at the context, file size, and the perplexity increase over the teacher. A
figure the run did not take is NOT MEASURED (with why), as on the classifier path, and counts only
under ``--require``. The target is the profile the run stored (``target_lm``) unless one is given.

The two latency lines are judged as the classifier's ``latency_ms`` (``lines.judge_p95``): the
p95 of the benchmark's per-run samples (``decode_runs``, ``ttft_runs``) pooled, PASS when its 95%
interval lies under the limit, FAIL when over it, INCONCLUSIVE when it straddles the limit or the
samples are too few to bound a p95 (72 at least); an undecided one is measured again in more
probe processes within ``max_seconds`` (``edgekd.gate.lm_remeasure``). Memory, size and the
perplexity increase are deterministic figures, compared directly. Against a baseline causal-LM
report (``--baseline``), the regression lines of ``edgekd.gate.lm_baseline`` are added: latency
with the classifier gate's statistics over the per-run samples, perplexity, agreement and size
compared directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from edgekd.bench.stats import LatencySamples
from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict
from edgekd.gate.lines import DEFAULT_THRESHOLD, GateLine, GateResult, judge_p95
from edgekd.gate.lm_baseline import REGRESSION_LINES, regression_lines
from edgekd.gate.lm_remeasure import FIGURES, LMSettler, run_unit
from edgekd.targets import LMBudget, TargetProfile, load_target

LM_LINES = ("decode_ms_per_token", "ttft_ms", "memory_mb", "model_size_mb", "perplexity_increase",
            *REGRESSION_LINES)  # fmt: skip
_WHY_MISSING = {
    "memory_mb": "the benchmark did not measure peak memory for this model",
    "perplexity_increase": "no teacher perplexity in the report (a black-box teacher)",
    "decode_ms_per_token": "the benchmark did not time this model",
    "ttft_ms": "the benchmark did not time this model",
}
_LATENCY_LINES = {"decode_ms_per_token": "decode", "ttft_ms": "ttft"}  # line -> its figure


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
    max_seconds: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> GateResult:
    """Judge the student of a causal-LM report against its target's ``[lm]`` lines, and against
    the student of ``baseline`` (a causal-LM report's JSON) when one is given. A latency line
    left INCONCLUSIVE by the stored runs is measured again within ``max_seconds`` in all (0:
    never), ``clock`` timing that budget."""
    from edgekd.lm.bench import budget_lines

    for wanted in (only, require):  # before anything is measured
        unknown = sorted(set(wanted or ()) - set(LM_LINES))
        if unknown:
            raise BadInputError(
                f"unknown line {unknown[0]!r} for a causal-LM report; its lines: "
                f"{', '.join(LM_LINES)}"
            )
    budget, name = _budget(data, where, target)
    rows = {m.get("name"): m for m in data.get("models") or [] if isinstance(m, dict)}
    if "student" not in rows:
        raise BadInputError(f"{where}: no 'student' row in field 'models': nothing to gate")
    teacher = rows.get("teacher", {}).get("perplexity")
    row = SimpleNamespace(**{k: rows["student"].get(k) for k in (
        "size_bytes", "perplexity", "decode_p95_ms", "ttft_p95_ms", "peak_memory_mb")})  # fmt: skip
    if row.perplexity is None:
        teacher = None
    settle = LMSettler(data, where, baseline, baseline_where or "baseline", max_seconds, clock,
                       wanted=lambda line: not only or line in only)  # fmt: skip
    lines = [_latency_line(line, settle) if line.name in _LATENCY_LINES else _gate_line(line)
             for line in budget_lines(row, budget, teacher)]  # fmt: skip
    notes: list[str] = []
    if baseline is not None:
        more, notes = regression_lines(data, where, baseline, baseline_where or "baseline",
                                       threshold, alpha, agreement_tolerance, any_host=any_host,
                                       settle=settle)  # fmt: skip
        lines += more
    if only:
        notes += [f"{line.name}: not checked (--only)" for line in lines if line.name not in only]
        lines = [line for line in lines if line.name in only]
    lines = [_required(line) if line.name in (require or ()) else line for line in lines]
    if not lines:
        notes.append(f"target {name!r} sets no [lm] budget line: nothing to check")
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


def _maker(line, detail: str) -> Callable[[Verdict, float | None, str], GateLine]:
    """A maker of ``line``'s GateLine (the student's), given its verdict, value and reason."""

    def make(verdict: Verdict, value: float | None, reason: str) -> GateLine:
        return GateLine(name=line.name, value=None if value is None else float(value),
                        limit=float(line.limit), unit=line.unit, kind=line.kind, model="student",
                        verdict=verdict, detail=detail, reason=reason)  # fmt: skip

    return make


def _gate_line(line) -> GateLine:
    """A deterministic figure (memory, size, perplexity increase) against its limit."""
    make = _maker(line, "stored figure of the LM benchmark")
    if line.value is None:
        return make(Verdict.NOT_MEASURED, None, _WHY_MISSING.get(line.name, "not measured"))
    ok = line.value <= line.limit
    reason = f"{line.value:.4g}{line.unit} {'<=' if ok else '>'} {line.limit:g}{line.unit}"
    return make(Verdict.PASS if ok else Verdict.FAIL, line.value, reason)


def _latency_line(line, settle: LMSettler) -> GateLine:
    """Decode ms/token or time to first token: the p95 of the per-run samples by its interval,
    as the classifier's ``latency_ms``, settled with more processes where it is undecided."""
    figure = _LATENCY_LINES[line.name]

    def decide(runs: list[LatencySamples]) -> GateLine:
        n = sum(len(r.samples_ms) for r in runs)
        added = sum(r.metadata.get("measured_by") == "gate" for r in runs)
        by_gate = f", {added} of them measured by the gate" if added else ""
        unit = f" ({run_unit(runs)})" if runs else ""
        make = _maker(line, f"p95 of the LM benchmark's per-run samples: {n} samples from "
                            f"{len(runs)} run(s){by_gate}{unit}")  # fmt: skip
        if runs:
            return judge_p95(make, runs, line.limit)
        if line.value is None:
            return make(Verdict.NOT_MEASURED, None, _WHY_MISSING[line.name])
        why = (f"the report keeps no per-run '{FIGURES[figure]}' (written before they were "
               f"stored), only its p95 {line.value:.4g} ms; re-run the LM benchmark")  # fmt: skip
        return make(Verdict.INCONCLUSIVE, line.value, why)

    return settle.absolute(decide, figure)


def _required(line: GateLine) -> GateLine:
    if line.verdict != Verdict.NOT_MEASURED:
        return line
    from dataclasses import replace

    return replace(line, verdict=Verdict.INCONCLUSIVE, reason=f"required, but {line.reason}")
