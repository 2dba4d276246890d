"""The gate's lines: one ``GateLine`` per budget or regression check of a model, and their result.

Lines, per gated model (the report's chosen student, or every student):

- ``latency_ms`` (absolute): p95 on this host within the budget, by its 95% upper bound
  (``check_absolute`` on the raw samples of every process);
- ``latency_estimate_ms`` (estimate): the device estimate, when the report carries one, labelled
  as an estimate;
- ``latency_vs_teacher`` (relative): model / teacher latency measured in the same run
  (``check_ratio``), which holds on any machine;
- ``peak_memory_mb``, ``model_size_kb``, ``params`` (absolute): peak RSS of a fresh process that
  loaded and ran the model, file size, parameter count;
- ``accuracy_drop`` (absolute): teacher accuracy - model accuracy on the same test split;
- ``latency_regression`` (regression): against the baseline report, ``compare_processes``: the
  threshold AND significance, across processes and across samples;
- ``accuracy_regression`` (regression): baseline accuracy - current accuracy, same test split.

``GateResult`` collects the lines; its verdict is FAIL if any line failed, else INCONCLUSIVE if any
could not be decided, else PASS. A line whose figure the benchmark never took (no teacher, no
labels, no memory figure) is NOT MEASURED, with why, and does not count unless it is required.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.bench.contention import clean_runs, set_aside
from edgekd.bench.stats import LatencySamples, pooled
from edgekd.errors import EXIT_GATE_FAILED, EXIT_INCONCLUSIVE, EXIT_OK
from edgekd.gate.checks import Verdict, check_absolute
from edgekd.gate.compare import check_ratio, compare_pairs, compare_processes
from edgekd.report.markdown import short_provider
from edgekd.results import BudgetLine, Line, ModelResult, Report
from edgekd.targets import TargetProfile

DEFAULT_THRESHOLD = 0.10
EXIT_CODES = {Verdict.PASS: EXIT_OK, Verdict.FAIL: EXIT_GATE_FAILED}

_SATURATED = (
    "the host was too busy to measure: the measuring thread waited for its CPU in most samples, "
    "so the figures time the neighbours; re-run (on a quieter host)"
)
_NO_SAMPLES = "the report keeps no raw latency samples; re-run edgekd bench"
LINE_NAMES = (
    "latency_ms",
    "latency_estimate_ms",
    "latency_vs_teacher",
    "peak_memory_mb",
    "model_size_kb",
    "params",
    "accuracy_drop",
    "latency_regression",
    "accuracy_regression",
)


@dataclass(frozen=True, kw_only=True)
class GateLine(Line):
    """One checked line of one model: a ``Line`` with the gate's verdict and why.
    ``kind``: absolute, relative, estimate or regression."""

    model: str
    verdict: Verdict
    kind: str = "absolute"
    detail: str = ""  # what was measured, and where
    reason: str = ""  # why this verdict

    @property
    def passed(self) -> bool | None:
        """The verdict's answer, not ``value <= limit``: relative and regression lines compare
        other figures, and a missing or unsteady figure is INCONCLUSIVE (None)."""
        return {Verdict.PASS: True, Verdict.FAIL: False}.get(self.verdict)

    def to_budget_line(self) -> BudgetLine:
        detail = f"{self.detail}; {self.verdict}: {self.reason}" if self.reason else self.detail
        return BudgetLine(
            self.name, self.limit, self.value, self.passed, self.unit, self.model, detail
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "verdict": str(self.verdict),
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "kind": self.kind,
            "detail": self.detail,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateResult:
    target: str
    lines: tuple[GateLine, ...]
    notes: tuple[str, ...] = ()
    baseline: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    report: str = ""

    @property
    def verdict(self) -> Verdict:
        # NOT MEASURED lines do not count (a required one was made INCONCLUSIVE by the gate);
        # with nothing measured at all there is nothing to pass.
        verdicts = {line.verdict for line in self.lines} - {Verdict.NOT_MEASURED}
        if Verdict.FAIL in verdicts:
            return Verdict.FAIL
        if Verdict.INCONCLUSIVE in verdicts or not verdicts:
            return Verdict.INCONCLUSIVE
        return Verdict.PASS

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, EXIT_INCONCLUSIVE)

    def counts(self) -> dict[str, int]:
        return {str(v): sum(line.verdict == v for line in self.lines) for v in Verdict}

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "exit_code": self.exit_code,
            "target": self.target,
            "report": self.report,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "counts": self.counts(),
            "lines": [line.to_dict() for line in self.lines],
            "notes": list(self.notes),
        }


# --- the checks -----------------------------------------------------------------------------------

_Maker = Callable[[Verdict, "float | None", str], GateLine]

# How the latency budget line is settled: ``decide(runs)`` once, or again with more processes
# of the model; given the model.
SettleOne = Callable[[Callable[[list[LatencySamples]], GateLine], ModelResult], GateLine]

# How a latency regression is settled: ``decide(current_runs, baseline_runs)`` once, or again
# with more processes (``edgekd.gate.remeasure``); given the model and the baseline's model.
Settle = Callable[
    [Callable[[list[LatencySamples], list[LatencySamples]], GateLine], ModelResult, ModelResult],
    GateLine,
]


def _line(name: str, m: ModelResult, limit: float, unit: str, kind: str, detail: str) -> _Maker:
    """A maker of one line's GateLine, given its verdict, value and reason."""

    def make(verdict: Verdict, value: float | None, reason: str) -> GateLine:
        value = None if value is None else float(value)
        return GateLine(
            name=name,
            model=m.name,
            verdict=verdict,
            value=value,
            limit=float(limit),
            unit=unit,
            kind=kind,
            detail=detail,
            reason=reason,
        )

    return make


def _at_most(make: _Maker, value: float | None, limit: float, unit: str, missing: str) -> GateLine:
    """A deterministic figure (size, parameters, memory, accuracy) against its limit; NOT
    MEASURED, with ``missing`` as the reason, when the report has no such figure."""
    if value is None:
        return make(Verdict.NOT_MEASURED, None, missing)
    ok = value <= limit
    return make(
        Verdict.PASS if ok else Verdict.FAIL,
        value,
        f"{format_value(value, unit)} {'<=' if ok else '>'} {format_value(limit, unit)}",
    )


def latency_runs(m: ModelResult) -> list[LatencySamples]:
    """The model's latency samples, one ``LatencySamples`` per process (older reports: one)."""
    if m.latency_processes:
        return [LatencySamples.from_dict(r) for r in m.latency_processes]
    if m.latency_samples_ms:
        return [LatencySamples(tuple(m.latency_samples_ms), loops=m.loops)]
    return []


def _where(m: ModelResult) -> str:
    provider = short_provider(m.provider)
    return f"{provider} on {m.device.upper()}, batch {m.batch_size}, {m.threads} threads"


def _latency_line(
    m: ModelResult, target: TargetProfile, mismatch: str, runs: list[LatencySamples] | None = None
) -> GateLine:
    limit = target.budget.latency_ms
    runs = latency_runs(m) if runs is None else runs
    n = sum(len(r.samples_ms) for r in runs)
    detail = f"p95 on this host ({_where(m)}), {n} samples from {len(runs)} process(es)"
    make = _line("latency_ms", m, limit, "ms", "absolute", detail)
    if not runs:
        return make(Verdict.INCONCLUSIVE, None, "the report keeps no raw samples; re-run bench")
    if mismatch:
        value = check_absolute(pooled(runs), limit, "p95").value_ms
        return make(Verdict.INCONCLUSIVE, value, mismatch)
    return judge_p95(make, runs, limit)


def judge_p95(make: _Maker, runs: list[LatencySamples], limit: float) -> GateLine:
    """A latency budget line from per-process samples: the pooled p95 against ``limit`` by its
    95% interval (``check_absolute``); where that is not a PASS, samples the harness saw
    descheduled are set aside and the clean ones judged (``edgekd.bench.contention``).
    The classifier's ``latency_ms`` and a causal-LM report's latency lines (``edgekd.gate.lm``)."""
    check = check_absolute(pooled(runs), limit, "p95")
    if check.verdict == Verdict.PASS:  # descheduled samples only ever make a run slower
        return make(check.verdict, check.value_ms, check.reason)
    clean = clean_runs(runs)
    if not clean.descheduled:
        return make(check.verdict, check.value_ms, check.reason)
    if not clean.runs:
        return make(Verdict.INCONCLUSIVE, check.value_ms, f"{_SATURATED} ({clean.note()}).")
    check = check_absolute(pooled(clean.runs), limit, "p95")
    return make(check.verdict, check.value_ms, f"{check.reason} {set_aside(model=clean)}")


def _estimate_line(m: ModelResult, target: TargetProfile) -> GateLine | None:
    estimate = getattr(m, "latency_estimate_ms", None)  # set by the device estimate, if run
    if estimate is None:
        return None
    detail = f"ESTIMATE for {target.device.name} (roofline model, not a measurement)"
    make = _line("latency_estimate_ms", m, target.budget.latency_ms, "ms", "estimate", detail)
    return _at_most(make, estimate, target.budget.latency_ms, "ms", "")


def _teacher_for(m: ModelResult, teachers: list[ModelResult]) -> ModelResult | None:
    """The teacher measured most like ``m``: same runtime, else same device, else the first."""
    for same in (lambda t: t.runtime == m.runtime, lambda t: t.device == m.device):
        found = [t for t in teachers if same(t)]
        if found:
            return found[0]
    return teachers[0] if teachers else None


def _relative_line(
    m: ModelResult, teacher: ModelResult | None, target: TargetProfile
) -> GateLine | None:
    limit = target.budget.latency_vs_teacher
    if limit <= 0:
        return None
    who = teacher.name if teacher else "the teacher"
    detail = f"p50 ratio to {who}, measured in the same run ({_where(m)})"
    make = _line("latency_vs_teacher", m, limit, "x", "relative", detail)
    if teacher is None:
        return make(Verdict.NOT_MEASURED, None, "no teacher in this report (bench --teacher)")
    if teacher.device != m.device:
        return make(
            Verdict.INCONCLUSIVE,
            None,
            f"the teacher ran on {teacher.device.upper()}, the model on {m.device.upper()}",
        )
    cur, ref = clean_runs(latency_runs(m)), clean_runs(latency_runs(teacher))
    if not cur.runs or not ref.runs:
        why = f"{_SATURATED} ({(cur if not cur.runs else ref).note()})."
        return make(Verdict.INCONCLUSIVE, None, why if cur.samples and ref.samples else _NO_SAMPLES)
    c = check_ratio(cur.runs, ref.runs, limit)
    aside = set_aside(model=cur, teacher=ref)
    return make(c.verdict, c.ratio, f"{c.reason} {aside}".strip())


def model_budget_lines(
    m: ModelResult,
    report: Report,
    target: TargetProfile,
    mismatch: str,
    settle: SettleOne | None = None,
) -> list[GateLine]:
    """The model's budget lines; ``settle`` decides the latency line (default: once, on the
    stored processes; it is never asked where the figures were measured differently)."""
    b = target.budget
    teacher = _teacher_for(m, [t for t in report.models if t.role == "teacher" and t is not m])
    if settle is not None and not mismatch and latency_runs(m):
        lines = [settle(lambda runs: _latency_line(m, target, "", runs), m)]
    else:
        lines = [_latency_line(m, target, mismatch)]
    lines += [x for x in (_estimate_line(m, target), _relative_line(m, teacher, target)) if x]
    memory = _line("peak_memory_mb", m, b.peak_memory_mb, "MB", "absolute",
                   "peak RSS of a fresh process that loaded and ran the model")  # fmt: skip
    size = _line("model_size_kb", m, b.model_size_kb, "KB", "absolute", "size of the model")
    params = _line("params", m, b.params, "", "absolute", "parameter count")
    lines += [
        _at_most(memory, m.peak_rss_mb, b.peak_memory_mb, "MB", "not measured in this report"),
        _at_most(size, m.size_bytes / 1024, b.model_size_kb, "KB", ""),
        _at_most(params, m.params, b.params, "", ""),
    ]
    has_acc = teacher is not None and teacher.accuracy is not None and m.accuracy is not None
    detail = (
        f"teacher {teacher.name} {teacher.accuracy:.4f} - model {m.accuracy:.4f}, same test split"
        if has_acc
        else "teacher - model test accuracy"
    )
    drop = teacher.accuracy - m.accuracy if has_acc else None
    accuracy = _line("accuracy_drop", m, b.accuracy_drop, "", "absolute", detail)
    missing = "needs labelled --data and a --teacher in the benchmark"
    lines.append(_at_most(accuracy, drop, b.accuracy_drop, "", missing))
    return lines


def _measured_differently(m: ModelResult, old: ModelResult, report, baseline, any_host) -> str:
    differs = [
        f"{what} {a} vs the baseline's {b}"
        for what, a, b in (
            ("provider", m.provider, old.provider),
            ("batch", m.batch_size, old.batch_size),
            ("threads", m.threads, old.threads),
        )
        if a != b
    ]
    cpu, old_cpu = report.host.get("cpu_model"), baseline.host.get("cpu_model")
    if cpu != old_cpu and not any_host:
        differs.append(f"CPU {cpu!r} vs the baseline's {old_cpu!r} (gate --any-host to compare)")
    return "measured differently: " + "; ".join(differs) if differs else ""


def _latency_regression(
    make: _Maker,
    current: list[LatencySamples],
    baseline: list[LatencySamples],
    threshold: float,
    alpha: float,
    pairs: Sequence[tuple[LatencySamples, LatencySamples]] = (),
) -> GateLine:
    cur, ref = clean_runs(current), clean_runs(baseline)
    line = None
    if cur.processes >= 2 and ref.processes >= 2 and min(len(cur.runs), len(ref.runs)) < 2:
        side = "current" if len(cur.runs) < 2 else "baseline"
        note = (cur if side == "current" else ref).note()
        line = make(Verdict.INCONCLUSIVE, None, f"{_SATURATED} ({side} run: {note}).")
    else:
        c = compare_processes(ref.runs, cur.runs, threshold, alpha)
        aside = set_aside(current=cur, baseline=ref)
        line = make(c.verdict, c.ratio, f"{c.reason} {aside}".strip())
    if line.verdict == Verdict.INCONCLUSIVE and pairs:
        # Rounds measured back to back (gate re-measuring): drift cancels in their ratios.
        clean = []
        for c_run, b_run in pairs:
            c_kept, b_kept = clean_runs([c_run]).runs, clean_runs([b_run]).runs
            if c_kept and b_kept:
                clean.append((c_kept[0], b_kept[0]))
        p = compare_pairs(clean, threshold, alpha)
        dropped = len(pairs) - len(clean)
        note = f" ({dropped} round(s) with a contended process left out)" if dropped else ""
        if p.verdict != Verdict.INCONCLUSIVE:
            line = make(p.verdict, p.ratio, f"{p.reason}{note} Unpaired: {line.reason}")
        else:
            line = make(line.verdict, line.value, f"{line.reason} Paired: {p.reason}{note}")
    return line


def regression_lines(
    m: ModelResult,
    report: Report,
    baseline: Report,
    threshold: float,
    alpha: float,
    accuracy_tolerance: float,
    any_host: bool,
    settle: Settle | None = None,
) -> list[GateLine]:
    """The model's regression lines against ``baseline``; ``settle`` decides the latency line
    (default: once, on the stored processes)."""
    try:
        old = baseline.model(m.name)
    except KeyError:
        return []
    detail = f"p50 vs the baseline's {old.name} ({_where(old)})"
    make = _line("latency_regression", m, 1.0 + threshold, "x", "regression", detail)
    cur, ref = clean_runs(latency_runs(m)), clean_runs(latency_runs(old))
    differs = _measured_differently(m, old, report, baseline, any_host)
    if differs or not cur.samples or not ref.samples:
        lines = [make(Verdict.INCONCLUSIVE, None, differs or _NO_SAMPLES)]
    else:

        def decide(current: list[LatencySamples], base: list[LatencySamples], pairs=()) -> GateLine:
            return _latency_regression(make, current, base, threshold, alpha, pairs)

        if settle is None:
            lines = [decide(latency_runs(m), latency_runs(old))]
        else:
            lines = [settle(decide, m, old)]
    if old.accuracy is None and m.accuracy is None:
        return lines
    make = _line("accuracy_regression", m, accuracy_tolerance, "", "regression",
                 "baseline accuracy - current accuracy")  # fmt: skip
    fingerprints = {r.data.get("test_fingerprint") for r in (report, baseline)} - {None}
    if old.accuracy is None or m.accuracy is None:
        lines.append(make(Verdict.NOT_MEASURED, None, "only one report has an accuracy"))
    elif len(fingerprints) > 1:
        lines.append(make(Verdict.INCONCLUSIVE, None, "the reports used different test data"))
    else:
        lines.append(_at_most(make, old.accuracy - m.accuracy, accuracy_tolerance, "", ""))
    return lines


def format_value(v: float | None, unit: str) -> str:
    """A figure and its unit as the gate shows it (``1,000,000``, ``2.5 ms``, ``-`` for none)."""
    if v is None:
        return "-"
    text = f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{v:.4g}"
    return f"{text} {unit}".rstrip()
