"""Temporary minimal harness (replaced by the calibrated harness in edgekd.bench.stats)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class _Summary:
    values: dict
    warning: str | None = None

    def to_dict(self) -> dict:
        return dict(self.values)


@dataclass(frozen=True)
class LatencySamples:
    samples_ms: tuple[float, ...]
    loops: int
    warmup: int
    metadata: dict = field(default_factory=dict)

    def summary(self) -> _Summary:
        a = np.asarray(self.samples_ms)
        return _Summary(
            {
                "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)),
                "p99": float(np.percentile(a, 99)),
                "mean": float(a.mean()),
                "n": len(a),
            }
        )


def measure_latency(
    run,
    *,
    warmup=10,
    min_samples=25,
    min_time_s=0.5,
    max_time_s=10.0,
    sample_min_s=0.002,
    metadata=None,
) -> LatencySamples:
    for _ in range(warmup):
        run()
    loops = 1
    while True:
        t = time.perf_counter()
        for _ in range(loops):
            run()
        if time.perf_counter() - t >= sample_min_s:
            break
        loops *= 2
    samples, start = [], time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        for _ in range(loops):
            run()
        samples.append((time.perf_counter() - t) * 1e3 / loops)
    return LatencySamples(tuple(samples), loops, warmup, metadata or {})
