"""Samples timed while the measuring thread waited for a CPU, and how the gate sets them aside.

On a shared host a latency sample can time the neighbours: on this project's 2-core machine at a
load average of 4, a one-thread ONNX Runtime session held its CPU about 40% of the time, and its
wall-clock median per call was 72 us while the CPU time per call stayed at 27 us (the quiet
machine's latency). Medians, not just tails, move that way, and no significance test can tell such
a run from a slower model. What can tell is the CPU time the measuring thread got during each
sample, which the harness records as ``cpu_share`` (thread CPU time / wall time; Google Benchmark
reports CPU time beside real time for the same reason).

* A sample is *descheduled* when its share is below ``MIN_CPU_SHARE``: for at least a tenth of it
  the thread waited for a CPU held by someone else.
* A process is *contended* when fewer than ``MIN_CLEAN_FRACTION`` of its samples are clean.

``clean_runs`` keeps each uncontended process's clean samples and drops contended processes. The
gate judges latency on what is left, and answers INCONCLUSIVE when too little is left, so a busy
host can delay a verdict but neither fail nor pass a model by itself. Samples kept are still wall
clock times, so a model that is slow when it does hold the CPU is still caught.

Shares are recorded for CPU runtimes only: a GPU runtime's thread legitimately sleeps while the GPU
works, so runs without shares are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgekd.bench.stats import LatencySamples

MIN_CPU_SHARE = 0.9
MIN_CLEAN_FRACTION = 0.5


def cpu_shares(run: LatencySamples) -> list[float] | None:
    """The per-sample CPU shares the harness recorded, or None (GPU runtime, older report)."""
    shares = run.metadata.get("harness", {}).get("cpu_share")
    if isinstance(shares, list) and len(shares) == len(run.samples_ms):
        return [float(s) for s in shares]
    return None


@dataclass(frozen=True)
class CleanRuns:
    """What ``clean_runs`` kept: ``runs`` (one per kept process) and how much it set aside."""

    runs: list[LatencySamples]
    samples: int  # before
    kept: int  # samples in ``runs``
    processes: int  # before
    contended: int  # processes dropped as contended
    measured_shares: bool  # False when no run recorded CPU shares (nothing could be judged)

    @property
    def descheduled(self) -> int:
        return self.samples - self.kept

    def note(self) -> str:
        """One clause for a verdict's reason; empty when nothing was set aside."""
        if not self.descheduled:
            return ""
        text = f"{self.descheduled} of {self.samples} samples descheduled"
        if self.contended:
            text += f", {self.contended} of {self.processes} processes contended"
        return text


def set_aside(**sides: CleanRuns) -> str:
    """What ``clean_runs`` set aside on each named side, as one sentence ("" if nothing).

    >>> set_aside(current=CleanRuns([], 10, 7, 1, 0, True))[:71]
    'Judged on clean samples (set aside: current 3 of 10 samples descheduled'
    """
    parts = [f"{name} {c.note()}" for name, c in sides.items() if c.note()]
    if not parts:
        return ""
    return (
        f"Judged on clean samples (set aside: {'; '.join(parts)}; a sample is descheduled when "
        f"the thread held its CPU < {MIN_CPU_SHARE:.0%} of it)."
    )


def clean_runs(runs: Sequence[LatencySamples]) -> CleanRuns:
    """Drop descheduled samples, and whole processes where they are the majority.

    >>> quiet = LatencySamples((1.0, 1.1), metadata={"harness": {"cpu_share": [1.0, 0.99]}})
    >>> busy = LatencySamples((3.0, 1.0), metadata={"harness": {"cpu_share": [0.35, 0.98]}})
    >>> c = clean_runs([quiet, busy])
    >>> c.kept, c.contended
    (3, 0)
    """
    kept: list[LatencySamples] = []
    contended = 0
    measured = False
    for run in runs:
        shares = cpu_shares(run)
        if shares is None:
            kept.append(run)
            continue
        measured = True
        values = tuple(v for v, s in zip(run.samples_ms, shares, strict=True) if s >= MIN_CPU_SHARE)
        if len(values) < MIN_CLEAN_FRACTION * len(run.samples_ms) or not values:
            contended += 1
            continue
        kept.append(LatencySamples(values, run.loops, run.warmup, run.metadata))
    total = sum(len(r.samples_ms) for r in runs)
    return CleanRuns(
        kept, total, sum(len(r.samples_ms) for r in kept), len(runs), contended, measured
    )
