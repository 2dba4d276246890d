"""How the quantization search times its variants: the bench harness, filtered, in two steps.

Every figure comes from ``edgekd bench``'s own harness (:func:`edgekd.bench.harness.measure_latency`
with the measuring thread's CPU time read around each sample) and its own filter
(:func:`edgekd.bench.contention.clean_runs`: samples in which the thread held its CPU < 90% of the
time are set aside, and a run where they are the majority). Unfiltered, a 0.1 s x 3 round screen
on a 2-core host at load 4-9 claimed 11.8x and 6.75x int8 speed-ups where the benchmark found
about 3.3x and 1.15x: whichever variant ran while a neighbour slept looked fast.

1. :func:`screen`: every variant in interleaved rounds (A, B, C, then B, C, A, ...) so that a
   drifting load is spread over all of them; each variant's figures are its clean samples, pooled.
2. :func:`duel`: the two leaders of the screen (:func:`edgekd.quantize.variants.leaders`)
   re-measured against each other in pairs, in alternating order (AB, BA, ...); each pair gives
   one ratio of medians, taken close together in time, so the load both sides saw is nearly the
   same. Pairs continue until the median ratio's distribution-free interval
   (:func:`edgekd.bench.stats.quantile_ci`) decides (clear of ``TIE`` on one side, or inside it),
   or the time budget is spent. Paired ratios, not two medians, because process-to-process and
   minute-to-minute drift on a shared host (10% and more) is larger than the differences ranked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgekd.bench.contention import clean_runs
from edgekd.bench.harness import measure_latency
from edgekd.bench.stats import DEFAULT_CONFIDENCE, LatencySamples, pooled, quantile_ci
from edgekd.quantize.variants import TIE, Duel

# As edgekd bench's BenchSettings.sample_min_s: on a busy host, 0.5-ms samples are cut by the
# scheduler far less often (3-14% at load 4.5) than the harness's default 2-ms ones (4-82%).
SAMPLE_MIN_S = 0.0005
SCREEN_ROUNDS = 3
# Below this many pairs the median ratio has no 95% interval (stats.samples_needed(0.5) == 6).
MIN_PAIRS = 8


@dataclass(frozen=True)
class Clock:
    """The two clocks the harness reads: wall time, and the measuring thread's CPU time (a
    sample whose CPU share is low waited for a CPU). Tests drive both by hand."""

    wall: Callable[[], int] = time.perf_counter_ns
    cpu: Callable[[], int] = time.thread_time_ns


REAL_CLOCK = Clock()


def timed(
    run: Callable[[], object], min_time_s: float, clock: Clock, metadata: dict, warmup: int = 10
) -> LatencySamples:
    """One harness measurement with per-sample CPU shares (at least 5 samples)."""
    return measure_latency(
        run,
        warmup=warmup,
        min_samples=5,
        min_time_s=min_time_s,
        sample_min_s=SAMPLE_MIN_S,
        metadata=metadata,
        timer=clock.wall,
        cpu_timer=clock.cpu,
    )


def latency_figures(runs: list[LatencySamples], threads: int) -> dict:
    """A variant's ``latency_ms``: the summary of its clean samples (all of them, and said so,
    when every run was contended), with the share set aside and the threads."""
    clean = clean_runs(runs)
    summary = pooled(clean.runs or runs).summary()
    return {
        **summary.short_dict(),
        "ci_low": summary.ci_low,
        "ci_high": summary.ci_high,
        "rel_spread": summary.rel_spread,
        "descheduled_fraction": clean.descheduled / clean.samples,
        "basis": "clean samples" if clean.runs else "all samples (every round was contended)",
        "threads": threads,
    }


def screen(
    runs: Mapping[str, Callable[[], object]],
    seconds_each: float,
    threads: int,
    clock: Clock = REAL_CLOCK,
    rounds: int = SCREEN_ROUNDS,
) -> dict[str, dict]:
    """Every named ``run`` timed in ``rounds`` interleaved rounds, ``seconds_each`` in all;
    returns each name's :func:`latency_figures`."""
    names = list(runs)
    got: dict[str, list[LatencySamples]] = {name: [] for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            meta = {"runtime": "ort_cpu", "threads": threads, "model": name, "round": r}
            got[name].append(timed(runs[name], seconds_each / rounds, clock, meta))
    return {name: latency_figures(got[name], threads) for name in names}


def _clean_median(run: LatencySamples) -> float | None:
    kept = clean_runs([run]).runs
    return float(np.median(kept[0].samples_ms)) if kept else None


def _decided(ratios: list[float], confidence: float) -> bool:
    """The interval is clear of the tie band on one side, or wholly inside it."""
    low, high = quantile_ci(np.sort(ratios), 0.5, confidence)
    if low is None or high is None:
        return False
    return high < 1 - TIE or low > 1 + TIE or (1 - TIE <= low and high <= 1 + TIE)


def duel(
    first: tuple[str, Callable[[], object]],
    second: tuple[str, Callable[[], object]],
    budget_s: float,
    threads: int,
    clock: Clock = REAL_CLOCK,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Duel:
    """``first`` against ``second`` (name, run), paired, until decided or ``budget_s`` is spent
    (twice that while fewer than ``MIN_PAIRS`` pairs are clean); ratio = first / second."""
    side_s = budget_s / (4 * MIN_PAIRS)  # the first MIN_PAIRS pairs take about half the budget
    start = clock.wall()
    deadline, hard_stop = start + budget_s * 1e9, start + 2 * budget_s * 1e9
    ratios: list[float] = []
    set_aside = 0
    while True:
        order = (first, second) if (len(ratios) + set_aside) % 2 == 0 else (second, first)
        medians = {}
        for name, run in order:
            meta = {"runtime": "ort_cpu", "threads": threads, "model": name, "duel": True}
            medians[name] = _clean_median(timed(run, side_s, clock, meta, warmup=3))
        a, b = medians[first[0]], medians[second[0]]
        if a is None or b is None:
            set_aside += 1
        else:
            ratios.append(a / b)
        now = clock.wall()
        enough = len(ratios) >= MIN_PAIRS
        if (enough and (_decided(ratios, confidence) or now >= deadline)) or now >= hard_stop:
            break
    if not ratios:  # every pair contended: nothing measured, a tie by the screen's own figures
        return Duel(first[0], second[0], 1.0, pairs=0, set_aside=set_aside, confidence=confidence)
    low, high = quantile_ci(np.sort(ratios), 0.5, confidence)
    return Duel(
        first[0],
        second[0],
        float(np.median(ratios)),
        low,
        high,
        len(ratios),
        set_aside,
        confidence,
    )
