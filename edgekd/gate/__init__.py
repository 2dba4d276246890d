"""``gate``: every budget line of a target, and regressions against a baseline, as verdicts.

The library verb behind ``edgekd gate`` (and the end of ``edgekd distill``). Each line answers
PASS, FAIL, INCONCLUSIVE or NOT MEASURED; the overall verdict is FAIL if any line failed, else
INCONCLUSIVE if any could not be decided, else PASS, and maps to the exit code (0 / 3 / 4). A line
is never PASS for want of evidence: too few samples or too much noise make it INCONCLUSIVE. A
figure the benchmark never took (no teacher, no labels) makes its line NOT MEASURED, shown with
why, which does not count unless the line is required (``require``: then it is INCONCLUSIVE). A
latency line that the stored processes leave open is measured until decided (``remeasure``).

The package's rooms: ``inputs`` (report files and limits, checked), ``checks`` (the statistical
verdicts on samples), ``compare`` (across processes), ``remeasure`` (more processes until
decided), ``lines`` (one ``GateLine`` per budget or regression line, listed there), ``lm`` (a
causal-LM report's ``[lm]`` lines), ``lm_baseline`` (its regressions against a baseline LM
report), ``lm_remeasure`` (more processes of its student until decided) and ``output``
(Markdown, JUnit, terminal). This module picks the report's models and
target and runs the lines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from edgekd.bench.stats import LatencySamples
from edgekd.errors import BadInputError, TargetError
from edgekd.gate.checks import Verdict
from edgekd.gate.inputs import check_limits, load_report
from edgekd.gate.lines import (
    DEFAULT_THRESHOLD,
    EXIT_CODES,
    LINE_NAMES,
    GateLine,
    GateResult,
    latency_runs,
    model_budget_lines,
    regression_lines,
)
from edgekd.gate.lm import gate_lm
from edgekd.gate.lm_baseline import lm_pair
from edgekd.gate.output import print_result, to_junit, to_markdown
from edgekd.gate.remeasure import (
    DEFAULT_MAX_SECONDS,
    Side,
    close_side,
    measure_until_decided,
    pair_of,
    side_of,
)
from edgekd.results import BudgetLine, ModelResult, Report
from edgekd.targets import TargetProfile, load_target

__all__ = [
    "DEFAULT_ACCURACY_TOLERANCE",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_THRESHOLD",
    "EXIT_CODES",
    "LINE_NAMES",
    "GateLine",
    "GateResult",
    "Verdict",
    "budget_lines",
    "gate",
    "latency_runs",
    "print_result",
    "to_junit",
    "to_markdown",
]

DEFAULT_ACCURACY_TOLERANCE = 0.01  # one point of accuracy on the same test split


def _as_report(report: Report | str | Path) -> tuple[Report, str]:
    if isinstance(report, Report):
        return report, report.out_dir or "(in memory)"
    return load_report(report), str(report)


def _target_of(
    report: Report, target: TargetProfile | str | None, notes: list[str], where: str
) -> TargetProfile:
    """The profile to gate by: the one given, else the one stored in the report (stored whole).

    A stored report keeps its verdict when its TOML file is edited later; the file is only read
    to say that it changed. Reports that store no whole profile fall back to the file.
    """
    stored = _stored_profile(report)
    if target is not None:
        profile = target if isinstance(target, TargetProfile) else load_target(target)
        check_limits(profile, profile.path or profile.name)
        if stored is not None and profile != stored:
            notes.append(
                f"target {profile.name} was given: it overrides the profile stored in the report "
                f"({_changes(stored, profile)})"
            )
        return profile
    if stored is not None:
        check_limits(stored, where, prefix="target.budget.")
        on_disk = _profile_on_disk(report)
        if on_disk is not None and on_disk != stored:
            notes.append(
                f"{on_disk.path} has changed since the report was measured "
                f"({_changes(stored, on_disk)}); gated by the profile stored in the report "
                f"(give --target to gate by the file)"
            )
        return stored
    name = report.target.get("name")
    if not name:
        raise BadInputError("the report names no target: give --target")
    path = report.target.get("path", "")
    profile = load_target(path if path and Path(path).is_file() else name)
    check_limits(profile, profile.path or profile.name)
    return profile


def _stored_profile(report: Report) -> TargetProfile | None:
    try:
        return TargetProfile.from_dict(report.target, "the report's target")
    except TargetError:  # an older or hand-written report: only a name (and maybe a path)
        return None


def _profile_on_disk(report: Report) -> TargetProfile | None:
    """The report's target as its TOML file reads today; None if it is not here (another host)."""
    name, path = report.target.get("name", ""), report.target.get("path", "")
    try:
        return load_target(path if path and Path(path).is_file() else name)
    except TargetError:
        return None


def _changes(old: TargetProfile, new: TargetProfile, shown: int = 3) -> str:
    """``budget.latency_ms 2.0 -> 5.0, ...``: the fields that differ, the first few by name."""

    def flat(d: dict, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old.to_dict()), flat(new.to_dict())
    keys = sorted(k for k in a.keys() | b.keys() if k != "path" and a.get(k) != b.get(k))
    text = ", ".join(f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _gated_models(rep: Report, rep_name: str, models: Sequence[str] | None) -> list[ModelResult]:
    """The models named, else the report's chosen student, else every non-teacher model."""
    names = {m.name for m in rep.models}
    if models:
        unknown = [n for n in models if n not in names]
        if unknown:
            raise BadInputError(
                f"{rep_name}: no model named {unknown[0]!r} (it has {', '.join(sorted(names))})"
            )
        gated = [rep.model(n) for n in models]
    elif rep.chosen:
        gated = [rep.model(rep.chosen)]
    else:
        gated = [m for m in rep.models if m.role != "teacher"]
    if not gated:
        raise BadInputError(f"{rep_name}: the report has no student model to gate")
    return gated


def _keep_only(lines: list[GateLine], only: Sequence[str], notes: list[str]) -> list[GateLine]:
    """``gate --only``: the named lines; the others are listed in the notes as not checked."""
    unknown = sorted(set(only) - set(LINE_NAMES))
    if unknown:
        raise BadInputError(f"unknown gate line {unknown[0]!r} (lines: {', '.join(LINE_NAMES)})")
    dropped = sorted({g.name for g in lines} - set(only))
    if dropped:
        notes.append(f"not checked (gate --only): {', '.join(dropped)}")
    return [g for g in lines if g.name in only]


def _require(lines: list[GateLine], require: Sequence[str]) -> list[GateLine]:
    """``gate --require``: the named lines count even when not measured (as INCONCLUSIVE)."""
    unknown = sorted(set(require) - set(LINE_NAMES))
    if unknown:
        raise BadInputError(f"unknown gate line {unknown[0]!r} (lines: {', '.join(LINE_NAMES)})")
    return [
        replace(g, verdict=Verdict.INCONCLUSIVE, reason=f"required (--require) but {g.reason}")
        if g.verdict == Verdict.NOT_MEASURED and g.name in require
        else g
        for g in lines
    ]


class _Settler:
    """Settles undecided latency lines with more processes (``edgekd.gate.remeasure``), within
    ``max_seconds`` for the whole gate. A model's side is kept across its lines, so processes
    added for its budget line also count for its regression; ``close`` removes what was made."""

    def __init__(self, reports, max_seconds, more, clock):
        self.reports = reports  # {"current": (report, name), "baseline": (report, name) or None}
        self.max_seconds, self.more, self.clock = max_seconds, more, clock
        self.sides: dict[tuple[str, str], Side] = {}
        self.closers: list[Callable[[], None]] = []

    def side(self, m: ModelResult, which: str) -> Side:
        key = (which, m.name)
        if key not in self.sides:
            report, name = self.reports[which]
            # an injected measurement (tests, benchmarks) is refused another CPU's report too
            more = None if self.more is None else (lambda: self.more(m, which))
            self.sides[key] = side_of(m, report, name, latency_runs(m), more)
        return self.sides[key]

    def _settle(self, decide, current: Side, baseline: Side, pair=None) -> GateLine:
        began = self.clock()
        line = measure_until_decided(
            decide, current, baseline, self.max_seconds, self.clock, pair
        )
        self.max_seconds = max(0.0, self.max_seconds - (self.clock() - began))  # one budget
        return line

    def absolute(self, decide, m: ModelResult) -> GateLine:
        if self.max_seconds <= 0:  # nothing to add: not even a file to hash
            return decide(latency_runs(m))
        return self._settle(lambda runs, _: decide(runs), self.side(m, "current"), Side([]))

    def __call__(self, decide, m: ModelResult, old: ModelResult) -> GateLine:
        if self.max_seconds <= 0 and not self.sides:
            return decide(latency_runs(m), latency_runs(old))
        pair = None
        if self.more is None and self.max_seconds > 0:  # both models timed in one process
            (report, name), (base, base_name) = self.reports["current"], self.reports["baseline"]
            pair, closers = pair_of(m, report, name, old, base, base_name)
            self.closers += closers
        return self._settle(decide, self.side(m, "current"), self.side(old, "baseline"), pair)

    def close(self) -> None:
        for side in self.sides.values():
            close_side(side)
        for close in self.closers:
            close()


def gate(
    report: Report | str | Path,
    target: TargetProfile | str | None = None,
    baseline: Report | str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    models: Sequence[str] | None = None,
    alpha: float = 0.01,
    accuracy_tolerance: float = DEFAULT_ACCURACY_TOLERANCE,
    any_host: bool = False,
    only: Sequence[str] | None = None,
    require: Sequence[str] | None = None,
    max_seconds: float = 0.0,
    more: Callable[[ModelResult, str], LatencySamples] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GateResult:
    """Check ``report`` against ``target``'s budget (and ``baseline``, if given).

    ``target`` defaults to the profile stored in the report (so editing the TOML file later does
    not change a stored report's verdict; a note says when the file differs). ``models`` picks the
    models to gate (default: the report's chosen student, else every non-teacher model).
    ``threshold`` is the latency regression threshold (0.10 = 10% slower), ``accuracy_tolerance``
    the accuracy one (0.01 = one point).
    ``only`` keeps just the named lines (e.g. ``["latency_ms", "latency_regression"]``); the others
    are listed in the notes as not checked. ``require`` names lines that must be measured: NOT
    MEASURED turns INCONCLUSIVE for them.
    A latency line (the budget's, a regression) left INCONCLUSIVE by the stored processes is
    measured again, a process a side per round, within ``max_seconds`` in all (the default 0:
    never; ``edgekd gate`` gives ``DEFAULT_MAX_SECONDS``); ``more(model, side)`` replaces the real
    measurement (``side`` "current" or "baseline"; classifier reports: a causal-LM report's
    student is timed by ``edgekd.gate.lm_remeasure``) and ``clock`` the time, for tests. A report
    measured on another CPU than this host's takes no processes, injected or real.

    >>> result = gate("runs/mobile/report.json", "mobile")  # doctest: +SKIP
    >>> result.verdict, result.exit_code  # doctest: +SKIP
    (<Verdict.PASS: 'PASS'>, 0)
    """
    if not (threshold >= 0 and math.isfinite(threshold)) or not 0 < alpha < 1:
        raise BadInputError("gate needs a threshold >= 0 and 0 < alpha < 1")
    if not (max_seconds >= 0 and math.isfinite(max_seconds)):
        raise BadInputError(f"gate --max-seconds must be a finite number >= 0, got {max_seconds}")
    lm, lm_base = lm_pair(report, baseline)  # a causal-LM run (edgekd.lm): edgekd.gate.lm
    if lm is not None:
        return gate_lm(lm, str(report), target, only, require, lm_base, str(baseline), threshold,
                       alpha, accuracy_tolerance, any_host, max_seconds, clock)  # fmt: skip
    rep, rep_name = _as_report(report)
    notes: list[str] = []
    prof = _target_of(rep, target, notes, rep_name)
    base, base_name = _as_report(baseline) if baseline is not None else (None, None)
    gated = _gated_models(rep, rep_name, models)
    if require:
        _require([], require)  # unknown names fail before anything is measured
    reports = {"current": (rep, rep_name), "baseline": (base, base_name)}
    settler = _Settler(reports, max_seconds, more, clock)
    try:
        lines = _lines(rep, prof, base, gated, notes, threshold, alpha, accuracy_tolerance,
                       any_host, settler)  # fmt: skip
    finally:
        settler.close()
    if only:
        lines = _keep_only(lines, only, notes)
    if require:
        lines = _require(lines, require)
    return GateResult(prof.name, tuple(lines), tuple(notes), base_name, threshold, rep_name)


def _lines(rep, prof, base, gated, notes, threshold, alpha, tolerance, any_host, settle):
    """Every line of the gated models: the budget's, and the regressions against ``base``."""
    measured_for = rep.target.get("name")
    mismatch = ""
    if rep.target.get("threads", prof.threads) != prof.threads:
        mismatch = (
            f"measured with {rep.target.get('threads')} target threads ({measured_for}), but "
            f"{prof.name} runs {prof.threads}; re-run edgekd bench --target {prof.name}"
        )
    if measured_for and measured_for != prof.name:
        notes.append(f"the report was measured for target {measured_for}, gated for {prof.name}")
    for u in rep.bench.get("unavailable", []):
        notes.append(f"{u['model']}: runtime {u['runtime']} was unavailable when measured")
    lines: list[GateLine] = []
    for m in gated:
        batch_mismatch = (
            f"measured at batch {m.batch_size}, but {prof.name} runs batch {prof.batch_size}"
            if m.batch_size != prof.batch_size
            else ""
        )
        lines += model_budget_lines(m, rep, prof, mismatch or batch_mismatch, settle.absolute)
        if base is not None:
            got = regression_lines(m, rep, base, threshold, alpha, tolerance, any_host, settle)
            if not got:
                notes.append(f"{m.name}: not in the baseline report; no regression check")
            lines += got
    return lines


def budget_lines(
    target: TargetProfile, model: ModelResult, teacher: ModelResult | None = None
) -> list[BudgetLine]:
    """One model's budget lines as ``BudgetLine`` (the gate decides them), for callers written
    before the gate existed; new code calls ``gate`` on a report."""
    models = [model] + ([replace(teacher, role="teacher")] if teacher is not None else [])
    report = Report(target=target.to_dict(), host={}, models=models, chosen=model.name)
    return [line.to_budget_line() for line in gate(report, target).lines]
