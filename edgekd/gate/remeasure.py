"""Measuring until decided: more processes for a latency line that the stored ones leave open.

pyperf's remedy for a noisy comparison is more processes, not longer ones. When a
``latency_regression`` line is INCONCLUSIVE (the ratio's interval straddles the threshold, or too
few processes ran clean), the gate runs more fresh processes of the current model and of the
baseline's, interleaved (ABBA), through bench's own worker (``edgekd.bench.runner.ExtraProcesses``),
and decides again after each round, until the interval settles the question or ``max_seconds``
is spent (a round is not started when the last one's length would overrun it). Only then is the
answer INCONCLUSIVE. When both files can be measured again, a round is one fresh process that
times both models, a sample of each in turn (``edgekd.bench.runner.PairedProcesses``), and its two
results are kept as a pair: the decision also gets the pairs (``decide(cur, base, pairs)``), whose
ratios cancel what the machine did meanwhile (``edgekd.gate.compare.compare_pairs``). The stored
processes are kept: new ones are added to each side. The
``latency_ms`` budget line is settled the same way with the model's processes alone (too few
clean samples to bound a p95, a limit inside the interval), and what it adds counts for the
model's regression line too.

A stored model is measured again only where that is safe and true to the report: a report
measured on this host's CPU (``host.cpu_model``; one that records none is taken as this host's),
since processes timed here added to another machine's would pool two machines' timings into one
interval that describes neither (``other_cpu``, which the causal-LM gate shares; ``gate
--any-host`` does not change it: it compares two reports across CPUs, each on its own processes);
an ONNX file (a report never makes the gate run code, so factories and checkpoints are not re-run),
on a runtime available here, found at its recorded path (or beside the report), whose bytes still
hash to the report's ``sha256``. A baseline that cannot be measured again keeps only its stored
processes, which bound how narrow the interval can get.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekd.bench.stats import LatencySamples
from edgekd.gate.checks import Verdict
from edgekd.gate.lines import GateLine
from edgekd.progress import status
from edgekd.results import ModelResult, Report

DEFAULT_MAX_SECONDS = 60.0
MAX_ROUNDS = 100  # a bound that a fake clock cannot talk the loop out of

# decide(current_runs, baseline_runs) or, once rounds have measured both sides back to back,
# decide(current_runs, baseline_runs, pairs) with pairs = [(current, baseline), ...] per round
Decide = Callable[..., GateLine]
OneMore = Callable[[], LatencySamples]
# One fresh process timing both models in turns: (current, baseline) of the same moment
OnePair = Callable[[], tuple[LatencySamples, LatencySamples]]


@dataclass(eq=False)
class Side:
    """One side of a comparison: its processes so far, and how to run one more (None: cannot).
    An empty side (no runs, no way to add any) is false: an absolute line has no baseline."""

    runs: list[LatencySamples]
    more: OneMore | None = None
    why_not: str = ""
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.runs) or self.more is not None


def measure_until_decided(
    decide: Decide,
    current: Side,
    baseline: Side,
    max_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    pair: OnePair | None = None,
) -> GateLine:
    """``decide(current.runs, baseline.runs)``, adding a process to each side that can take one,
    a round at a time, while the verdict is INCONCLUSIVE and ``max_seconds`` allows; the reason
    says what was added. (An absolute line passes an empty baseline that cannot take any.)
    With ``pair``, a round is one process that times both models in turns instead of one
    process a side.

    >>> cur, base = Side(cur_runs, more_cur), Side(base_runs, more_base)  # doctest: +SKIP
    >>> measure_until_decided(decide, cur, base, max_seconds=60).verdict  # doctest: +SKIP
    <Verdict.PASS: 'PASS'>
    """
    line = decide(current.runs, baseline.runs)
    named = [(s, who) for s, who in ((baseline, "the baseline's"), (current, "the model's")) if s]
    sides = [s for s, _ in named if s.more is not None]
    if line.verdict != Verdict.INCONCLUSIVE or max_seconds <= 0:
        return line
    if not sides:
        why = "; ".join(s.why_not for s, _ in named if s.why_not)
        return replace(line, reason=f"{line.reason} (not measured again: {why})")
    start, last, rounds, added = clock(), 0.0, 0, dict.fromkeys(map(id, sides), 0)
    paired = current.more is not None and baseline.more is not None
    pairs: list[tuple[LatencySamples, LatencySamples]] = []
    while rounds < MAX_ROUNDS and clock() - start + last <= max_seconds:
        began = clock()
        status(
            f"gate: {line.name} ({line.model}) undecided; measuring round {rounds + 1} "
            f"({began - start:.0f} of at most {max_seconds:g} s)"
        )
        if pair is not None and paired:
            c_run, b_run = pair()
            current.runs.append(c_run)
            baseline.runs.append(b_run)
            added[id(current)] += 1
            added[id(baseline)] += 1
        else:
            # ABBA order: neither side always runs first, after the machine has been idle
            for side in sides if rounds % 2 == 0 else reversed(sides):
                side.runs.append(side.more())
                added[id(side)] += 1
        last, rounds = clock() - began, rounds + 1
        if paired:
            pairs.append((current.runs[-1], baseline.runs[-1]))
            line = decide(current.runs, baseline.runs, pairs)
        else:
            line = decide(current.runs, baseline.runs)
        if line.verdict != Verdict.INCONCLUSIVE:
            break
    what = " and ".join(f"{added[id(s)]} more process(es) of {who}" for s, who in named
                        if id(s) in added)  # fmt: skip
    what += f" in {clock() - start:.0f} s"
    if line.verdict == Verdict.INCONCLUSIVE:
        note = f"still undecided after {what} (gate --max-seconds {max_seconds:g})"
    else:
        note = f"decided after {what}"
    missing = [s.why_not for s, _ in named if s.more is None and s.why_not]
    return replace(line, reason=f"{line.reason} ({'; '.join([note, *missing])})")


def other_cpu(host: Mapping[str, Any] | None) -> str:
    """Why no process timed here may join a report's stored ones: it was measured on another CPU
    (its ``host.cpu_model``), and two machines' timings pooled make an interval that describes
    neither; "" when it is this host's CPU or the report records none (measured as before).
    Shared by the classifier and causal-LM gates.

    >>> other_cpu({"cpu_model": "cpu-B"})  # doctest: +SKIP
    "measured on CPU 'cpu-B', not on this host's 'cpu-A'"
    """
    from edgekd.hostinfo import host_info  # looked up at call time: tests stand in another host

    measured = host.get("cpu_model") if isinstance(host, Mapping) else None
    here = host_info().get("cpu_model")
    if measured and measured != here:
        return f"measured on CPU {measured!r}, not on this host's {here!r}"
    return ""


def _from_here(report: Report, report_path: str) -> str:
    """Why ``report`` takes no processes here (measured on another CPU); "" on this host's CPU."""
    why = other_cpu(report.host)
    return f"{report_path or 'the report'} was {why}, so none were added to it" if why else ""


def model_file(m: ModelResult, report_path: str) -> tuple[Path | None, str]:
    """The file of ``m`` as measured, or None and why it cannot be measured again."""
    from edgekd.bench.digest import file_sha256
    from edgekd.runtimes import RUNTIMES

    if m.format != "onnx" or not m.path.lower().endswith(".onnx"):
        return None, f"{m.name} is not an ONNX file (a report never makes the gate run code)"
    if not m.sha256:
        return None, f"the report keeps no sha256 of {m.name}'s file (re-run edgekd bench)"
    if m.runtime not in RUNTIMES or not RUNTIMES.get(m.runtime).available():
        return None, f"runtime {m.runtime or '?'} of {m.name} is not available here"
    for path in candidate_paths(m.path, report_path):
        if path.is_file() and file_sha256(path) == m.sha256:
            return path, ""
    return None, f"{m.path} is gone or has changed since it was measured"


def candidate_paths(recorded: str, report_path: str) -> list[Path]:
    """Where a report's model file may be now: as recorded, then relative to the report's folder,
    then beside the report by name (a run folder moved or copied whole)."""
    here = Path(report_path).parent if report_path and Path(report_path).is_file() else None
    candidates = [Path(recorded)]
    if here is not None:
        candidates += [here / recorded, here / Path(recorded).name]
    return candidates


def bench_settings(report: Report):
    """The report's benchmark settings for one more process (its harness, latency only)."""
    from edgekd.bench.runner import BenchSettings

    b = report.bench
    processes = max(1, int(b.get("processes", 3)))
    return BenchSettings(
        processes=1,
        min_samples=max(1, math.ceil(b.get("min_samples", 72) / processes)),
        seconds_per_process=b.get("min_time_s", 0.25),
        max_time_s=b.get("max_time_s", 10.0),
        warmup=b.get("warmup", 10),
        sample_min_s=b.get("sample_min_s", 0.0005),
        large_batch=0,
        extra_processes=0,
    )


def side_of(
    m: ModelResult,
    report: Report,
    report_path: str,
    runs: list[LatencySamples],
    more: OneMore | None = None,
) -> Side:
    """A ``Side`` whose ``more`` starts a worker for ``m`` on first use (nothing is prepared for a
    line that is decided without it), or none when ``report`` was measured on another CPU or its
    file cannot be measured again (``why_not`` says which); call ``close_side`` when done. A
    ``more`` given (tests, benchmarks) replaces the worker and the file's checks, not the CPU's."""
    from_here = _from_here(report, report_path)
    if from_here:
        return Side(list(runs), why_not=from_here)
    if more is not None:
        return Side(list(runs), more)
    path, why = model_file(m, report_path)
    side = Side(list(runs), why_not=why)
    if path is None:
        return side
    state: dict[str, object] = {}

    def more() -> LatencySamples:
        if "procs" not in state:
            from edgekd.bench.runner import ExtraProcesses, ModelRef

            ref = ModelRef(m.name, str(path), m.runtime, m.precision, m.role)
            procs = ExtraProcesses(ref, m.threads, m.batch_size, bench_settings(report))
            state["procs"] = procs
            side._closers.append(procs.close)
        return state["procs"]()  # type: ignore[operator]

    side.more = more
    return side


def pair_of(
    m: ModelResult,
    report: Report,
    report_path: str,
    old: ModelResult,
    baseline: Report,
    baseline_path: str,
) -> tuple[OnePair | None, list[Callable[[], None]]]:
    """A ``OnePair`` for ``m`` and the baseline's ``old`` when both reports were measured on this
    host's CPU and both files can be measured again (``model_file``) on the same runtime, else
    None; and what to call when done. Nothing is prepared until the first round."""
    closers: list[Callable[[], None]] = []
    if _from_here(report, report_path) or _from_here(baseline, baseline_path):
        return None, closers
    path, _ = model_file(m, report_path)
    old_path, _ = model_file(old, baseline_path)
    if path is None or old_path is None or m.runtime != old.runtime:
        return None, closers
    state: dict[str, object] = {}

    def pair() -> tuple[LatencySamples, LatencySamples]:
        if "procs" not in state:
            from edgekd.bench.runner import ModelRef, PairedProcesses

            cur = ModelRef(m.name, str(path), m.runtime, m.precision, m.role)
            base = ModelRef(old.name, str(old_path), old.runtime, old.precision, old.role)
            procs = PairedProcesses(cur, base, m.threads, m.batch_size, bench_settings(report))
            state["procs"] = procs
            closers.append(procs.close)
        return state["procs"]()  # type: ignore[operator]

    return pair, closers


def close_side(side: Side) -> None:
    for close in side._closers:
        close()
