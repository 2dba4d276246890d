"""The latency harness: warm-up, a calibrated loop count, and repeated timed samples.

Modelled on pyperf and timeit: untimed warm-up calls first (lazy initialisation, caches, the
allocator's first touch), then a loop count calibrated so each timed sample lasts at least
``sample_min_s`` (so the timer's resolution and its own cost vanish), then samples until there
are enough of them and enough time has passed. Each sample is one plain
``for _ in range(loops): run()`` between two ``time.perf_counter_ns()`` reads, with Python's
garbage collector paused (as timeit does) so a collection of the caller's garbage does not land in
a random sample. The result is an immutable ``LatencySamples`` carrying what was done and on what.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgekd.bench.stats import LatencySamples, LatencySummary
from edgekd.errors import BadInputError

# Even when max_time_s runs out, return at least this many samples: fewer cannot give a
# confidence interval for the median, and the stats module reports them as untrustworthy anyway.
MIN_SAMPLES_FLOOR = 5

# Calibration aims a little above sample_min_s so that a calibration run that happened to be slow
# does not leave the real samples just under it.
_CALIBRATION_MARGIN = 1.2


def _calibrate(
    run: Callable[[], object], target_ns: int, timer: Callable[[], int]
) -> tuple[int, int]:
    """Loops per sample so that one sample lasts >= target_ns; returns (loops, calls made)."""
    loops, calls = 1, 0
    while True:
        t0 = timer()
        for _ in range(loops):
            run()
        dt = timer() - t0
        calls += loops
        if dt >= target_ns:
            return loops, calls
        # Scale by the measured shortfall, but at least x2 (progress) and at most x10 (a reading
        # near the timer's resolution, or zero, says little about the real cost).
        wanted = math.ceil(loops * _CALIBRATION_MARGIN * target_ns / dt) if dt > 0 else loops * 10
        loops = min(loops * 10, max(loops * 2, wanted))


def _host_metadata() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def _load_average() -> list[float] | None:
    # On a shared machine the load average is the first thing to look at when numbers move.
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def measure_latency(
    run: Callable[[], object],
    *,
    warmup: int = 10,
    min_samples: int = 25,
    min_time_s: float = 0.5,
    max_time_s: float = 10.0,
    sample_min_s: float = 0.002,
    metadata: dict | None = None,
    disable_gc: bool = True,
    timer: Callable[[], int] = time.perf_counter_ns,
    cpu_timer: Callable[[], int] | None = None,
) -> LatencySamples:
    """Time ``run()`` and return per-call latencies in milliseconds.

    1. ``warmup`` untimed calls.
    2. Calibration (untimed): the loop count grows until ``loops`` calls take >= ``sample_min_s``.
    3. Samples of ``loops`` calls each, until there are ``min_samples`` of them AND ``min_time_s``
       has been spent sampling; or until ``max_time_s`` has passed since the call began (warm-up
       and calibration count) and there are at least ``min(5, min_samples)``. That floor is the
       only thing that can make a call outlast ``max_time_s``.

    Each sample is ``duration / loops``. ``disable_gc`` pauses the garbage collector during each
    sample (and restores it after). ``timer`` returns integer nanoseconds; it is a parameter so
    tests can drive the harness with a fake clock. ``metadata`` is copied into the result, with the
    harness's own facts (calibration, timer, host, load average) under the key ``"harness"``.

    ``cpu_timer`` (e.g. ``time.thread_time_ns``), when given, is read just outside each sample's
    timed span, and ``metadata["harness"]["cpu_share"]`` lists, per sample, the CPU time the
    measuring thread got over the sample's wall time. Google Benchmark reports CPU time beside
    real time for the same reason: a share well below 1 means the thread waited for a CPU that
    another process held, so that sample timed the neighbours as much as the model.

    >>> s = measure_latency(lambda: sum(range(100)), min_time_s=0.05)  # doctest: +SKIP
    >>> s.summary().p50  # milliseconds per call  # doctest: +SKIP
    0.0011
    """
    _check_settings("measure_latency", warmup, min_samples, min_time_s, max_time_s, sample_min_s)
    load_before = _load_average()
    start = timer()
    loops, calibration_calls = _warm_up(run, warmup, int(sample_min_s * 1e9), timer)
    until = _Until.of(min_samples, min_time_s, max_time_s, start)
    samples, shares = _sample_until(run, loops, until, timer, cpu_timer, disable_gc)
    harness = {
        **_harness_facts(timer, disable_gc, sample_min_s, start, load_before),
        "calibration_calls": calibration_calls,
    }
    if cpu_timer is not None:
        harness["cpu_share"] = shares
    return LatencySamples(
        samples_ms=tuple(samples),
        loops=loops,
        warmup=warmup,
        metadata={**(metadata or {}), "harness": harness},
    )


def _check_settings(
    what: str,
    warmup: int,
    min_samples: int,
    min_time_s: float,
    max_time_s: float,
    sample_min_s: float,
) -> None:
    if warmup < 0 or min_samples < 1:
        raise BadInputError(f"{what} needs warmup >= 0 and min_samples >= 1")
    if not (min_time_s >= 0 and max_time_s > 0 and sample_min_s > 0):
        raise BadInputError(f"{what} needs min_time_s >= 0, max_time_s > 0 and sample_min_s > 0")


def _harness_facts(
    timer: Callable[[], int],
    disable_gc: bool,
    sample_min_s: float,
    start: int,
    load_before: list[float] | None,
) -> dict:
    """The harness's own facts for a result's ``metadata["harness"]``, at the end of a call."""
    return {
        "timer": getattr(timer, "__qualname__", repr(timer)),
        "gc_disabled": disable_gc,
        "sample_min_s": sample_min_s,
        "elapsed_s": (timer() - start) / 1e9,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        **_host_metadata(),
    }


def _warm_up(
    run: Callable[[], object], warmup: int, sample_min_ns: int, timer: Callable[[], int]
) -> tuple[int, int]:
    """``warmup`` untimed calls, then the calibration; returns (loops, calibration calls)."""
    for _ in range(warmup):
        run()
    return _calibrate(run, sample_min_ns, timer)


@dataclass(frozen=True)
class _Until:
    """When sampling stops: enough samples AND enough time, or the deadline once past the floor."""

    min_samples: int
    min_time_ns: int
    floor: int
    deadline: int  # timer reading at which max_time_s has passed since the call began

    @classmethod
    def of(cls, min_samples: int, min_time_s: float, max_time_s: float, start: int) -> _Until:
        """The rule for a call that began at timer reading ``start``."""
        return cls(min_samples, int(min_time_s * 1e9), min(MIN_SAMPLES_FLOOR, min_samples),
                   start + int(max_time_s * 1e9))  # fmt: skip

    def reached(self, n: int, sampled_ns: int, now: int) -> bool:
        if n >= self.min_samples and sampled_ns >= self.min_time_ns:
            return True
        return n >= self.floor and now >= self.deadline


def _one_sample(
    run: Callable[[], object],
    loops: int,
    timer: Callable[[], int],
    cpu_timer: Callable[[], int] | None,
    disable_gc: bool,
) -> tuple[int, int, float | None]:
    """One sample of ``loops`` calls: (start, end, CPU share or None)."""
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.disable()
    try:
        c0 = cpu_timer() if cpu_timer is not None else 0
        t0 = timer()
        for _ in range(loops):
            run()
        t1 = timer()
        c1 = cpu_timer() if cpu_timer is not None else 0
    finally:
        if disable_gc and gc_was_enabled:
            gc.enable()
    share = round((c1 - c0) / max(t1 - t0, 1), 3) if cpu_timer is not None else None
    return t0, t1, share


def _sample_until(
    run: Callable[[], object],
    loops: int,
    until: _Until,
    timer: Callable[[], int],
    cpu_timer: Callable[[], int] | None,
    disable_gc: bool,
) -> tuple[list[float], list[float]]:
    """Samples of ``loops`` calls each until ``until`` is reached: (ms per call, CPU shares)."""
    samples: list[float] = []
    shares: list[float] = []
    sampling_start = timer()
    while True:
        t0, t1, share = _one_sample(run, loops, timer, cpu_timer, disable_gc)
        # A zero reading can only come from a timer coarser than the sample; clamp it to 1 ns so
        # the sample stays valid (> 0) rather than inventing a finer value.
        samples.append(max(t1 - t0, 1) / loops / 1e6)
        if share is not None:
            shares.append(share)
        if until.reached(len(samples), t1 - sampling_start, t1):
            return samples, shares


def throughput_row(summary: LatencySummary, batch_size: int) -> dict[str, Any]:
    """Items per second at ``batch_size`` from a batch latency summary: the median, and its CI
    inverted. Shared by ``measure_throughput`` and the fresh-process bench (``bench.runner``)."""
    return {
        "batch_size": batch_size,
        "items_per_s": batch_size * 1e3 / summary.p50,
        "items_per_s_low": batch_size * 1e3 / summary.ci_high,
        "items_per_s_high": batch_size * 1e3 / summary.ci_low,
        "batch_p50_ms": summary.p50,
        "trustworthy": summary.trustworthy,
        "warning": summary.warning,
    }


def measure_throughput(run_batch: Callable[[], object], batch_size: int, **kw: Any) -> dict:
    """Items per second of ``run_batch()`` (which processes ``batch_size`` items), from the median.

    ``kw`` goes to ``measure_latency``. The interval comes from the median's CI, inverted.

    >>> measure_throughput(lambda: model(batch), batch_size=32)["items_per_s"]  # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    samples = measure_latency(run_batch, **kw)
    return {**throughput_row(samples.summary(), batch_size), "samples": samples.to_dict()}


def measure_interleaved(
    runs: Sequence[Callable[[], object]],
    *,
    warmup: int = 10,
    min_samples: int = 25,
    min_time_s: float = 0.5,
    max_time_s: float = 10.0,
    sample_min_s: float = 0.002,
    metadata: dict | None = None,
    disable_gc: bool = True,
    timer: Callable[[], int] = time.perf_counter_ns,
    cpu_timer: Callable[[], int] | None = None,
) -> list[LatencySamples]:
    """``measure_latency`` of several callables in one process, one sample of each in turn
    (ABBA order), so that whatever the machine does during the measurement falls on all of them
    alike, down to a sample's length: the gate's paired rounds (``edgekd.gate.remeasure``) compare
    models measured so. Each callable gets its own warm-up and calibrated loop count; sampling
    stops when every one has ``min_samples`` samples and ``len(runs) x min_time_s`` have passed
    since sampling began (or at ``max_time_s``, past the floor). Arguments as ``measure_latency``'s.

    >>> a, b = measure_interleaved([run_a, run_b], min_time_s=0.2)  # doctest: +SKIP
    """
    if not runs:
        raise BadInputError("measure_interleaved needs callables to measure")
    _check_settings(
        "measure_interleaved", warmup, min_samples, min_time_s, max_time_s, sample_min_s
    )
    load_before = _load_average()
    start = timer()
    calibrated = [_warm_up(run, warmup, int(sample_min_s * 1e9), timer) for run in runs]
    until = _Until.of(min_samples, min_time_s, max_time_s, start)
    samples: list[list[float]] = [[] for _ in runs]
    shares: list[list[float]] = [[] for _ in runs]
    # As in measure_latency, sampling time is wall time since sampling began (gaps between samples
    # included: on a busy host the thread is often descheduled there); each callable has its
    # share of it, so the whole lasts len(runs) x min_time_s.
    until = replace(until, min_time_ns=until.min_time_ns * len(runs))
    turn, now = 0, timer()
    sampling_start = now
    while not all(until.reached(len(x), now - sampling_start, now) for x in samples):
        for i in range(len(runs)) if turn % 2 == 0 else reversed(range(len(runs))):
            t0, now, share = _one_sample(runs[i], calibrated[i][0], timer, cpu_timer, disable_gc)
            samples[i].append(max(now - t0, 1) / calibrated[i][0] / 1e6)
            if share is not None:
                shares[i].append(share)
        turn += 1
    harness = {
        **_harness_facts(timer, disable_gc, sample_min_s, start, load_before),
        "interleaved_with": len(runs) - 1,
    }
    out = []
    for i, (loops, calls) in enumerate(calibrated):
        h = {**harness, "calibration_calls": calls}
        if cpu_timer is not None:
            h["cpu_share"] = shares[i]
        out.append(LatencySamples(tuple(samples[i]), loops, warmup, {**(metadata or {}),
                                                                       "harness": h}))  # fmt: skip
    return out
