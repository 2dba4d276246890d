"""Latency samples, their summary, and the order statistics that bound them (measurement only).

This module owns two things:

* ``LatencySamples``: immutable per-call latencies (one value per independent timed sample) plus the
  metadata needed to interpret them (loops per sample, warm-up, runtime, threads, host).
* ``LatencySummary``: percentiles, a distribution-free confidence interval for the median, a spread
  measure and a trust flag.

The verdicts built on them (``compare_latency``, ``check_absolute``) belong to the gate:
``edgekd.gate.checks``.

Conventions
-----------
Percentiles use numpy's default ("linear") method: for sorted values x[0..n-1], the q-th quantile
sits at position (n - 1) * q and is interpolated between its two neighbours.

Confidence intervals for a quantile are distribution-free, from binomial order statistics
(e.g. Conover, *Practical Nonparametric Statistics*, 3rd ed., section 3.2). With B ~ Bin(n, q) the
number of samples below the true q-quantile xi, the k-th smallest value X_(k) (1-based) exceeds xi
exactly when B <= k - 1. So for a two-sided level 1 - a:

    lower = X_(l), l the largest rank with   P(B <= l - 1) <= a / 2
    upper = X_(u), u the smallest rank with  P(B >= u)     <= a / 2

Each bound may not exist when n is small (for the median at 95%, n <= 5; for p95 at 95% the upper
bound needs n >= 72). ``LatencySummary`` then reports the full sample range for the median and
marks the summary untrustworthy; the gate's verdicts (``edgekd.gate.checks``) refuse to decide on a
missing bound.

Spread is the interquartile range over the median, ``rel_spread = (p75 - p25) / p50``: robust to
the occasional outlier (a context switch) that would inflate a standard deviation, and unit-free.
A summary is *trustworthy* when the median's interval exists and ``rel_spread`` is at most
``MAX_REL_SPREAD``.

What these statistics cannot see: samples from one process share that process's luck (CPU
frequency, cache and memory placement, neighbours on a shared machine). On a shared 2-core host
one tiny model's median moved between 6.9 and 11.6 us across six processes while each process's
own spread was small. A regression check is therefore only as good as its pairing: compare
samples taken in the same process, interleaved, or repeat runs in several processes (pyperf).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import BadInputError

# IQR above 20% of the median: the machine (or the model) is too noisy for a 10% regression check
# to mean anything. pyperf warns at a standard deviation of 10% of the mean; for normal data the
# IQR is 1.35 standard deviations, so 20% IQR is about a 15% standard deviation.
MAX_REL_SPREAD = 0.20
DEFAULT_CONFIDENCE = 0.95


# --------------------------------------------------------------------------------------------
# Order-statistic confidence intervals


def quantile_ci_ranks(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """0-based indices (into the sorted samples) of a distribution-free CI for the q-quantile.

    Either index is None when ``n`` is too small for that bound at this confidence.

    >>> quantile_ci_ranks(10, 0.5, 0.95)  # X_(2) and X_(9): coverage 1 - 2 * 11/1024 = 97.9%
    (1, 8)
    """
    if n < 1 or not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        raise BadInputError(f"quantile CI needs n >= 1, 0 < q < 1, 0 < confidence < 1 (n={n})")
    tail = (1.0 - confidence) / 2.0
    cdf, sf = _binomial_tails(n, q)  # cdf[j] = P(B <= j), sf[j] = P(B > j) = P(B >= j + 1)
    # lower: rank l (1-based) with P(B <= l - 1) <= tail, largest such l; its 0-based index is l - 1
    ok_low = np.flatnonzero(cdf[:n] <= tail)
    low = int(ok_low[-1]) if ok_low.size else None
    # upper: rank u (1-based) with P(B >= u) = sf[u - 1] <= tail, smallest such u; index u - 1
    ok_high = np.flatnonzero(sf[:n] <= tail)
    high = int(ok_high[0]) if ok_high.size else None
    return low, high


def _binomial_tails(n: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """P(B <= j) and P(B > j) for j = 0..n, B ~ Binomial(n, q), from the log-pmf summed from
    each end (each tail summed on its own side keeps its small values exact). Written out so that
    measuring never imports scipy (0.8 s of every ``edgekd bench`` start)."""
    k = np.arange(n + 1)
    log_choose = math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1)
                                                for j in range(n + 1)])  # fmt: skip
    pmf = np.exp(log_choose + k * math.log(q) + (n - k) * math.log1p(-q))
    cdf = np.minimum(np.cumsum(pmf), 1.0)
    sf = np.append(np.cumsum(pmf[::-1])[::-1][1:], 0.0)
    return cdf, np.minimum(sf, 1.0)


def samples_needed(q: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The smallest n for which both bounds of the q-quantile's CI exist.

    The lower bound exists once P(B <= 0) = (1 - q)^n <= tail, the upper once P(B >= n) = q^n <=
    tail (tail = (1 - confidence) / 2), so n >= log(tail) / log(max(q, 1 - q)).

    >>> samples_needed(0.5), samples_needed(0.95)
    (6, 72)
    """
    tail = (1.0 - confidence) / 2.0
    n = max(1, math.ceil(math.log(tail) / math.log(max(q, 1.0 - q))))
    # guard the float rounding of the closed form against the exact rule
    while n > 1 and None not in quantile_ci_ranks(n - 1, q, confidence):
        n -= 1
    while None in quantile_ci_ranks(n, q, confidence):
        n += 1
    return n


def quantile_ci(
    sorted_values: np.ndarray, q: float, confidence: float
) -> tuple[float | None, float | None]:
    """The q-quantile's distribution-free CI as values of ``sorted_values`` (None: no bound)."""
    low, high = quantile_ci_ranks(len(sorted_values), q, confidence)
    return (
        None if low is None else float(sorted_values[low]),
        None if high is None else float(sorted_values[high]),
    )


# --------------------------------------------------------------------------------------------
# Samples and their summary


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of one ``LatencySamples``; every latency in milliseconds.

    ``std`` is the sample standard deviation (ddof=1; 0 for one sample). ``ci_low``/``ci_high``
    bound the median at ``confidence`` (full range when n is too small; then ``trustworthy`` is
    False). ``rel_spread`` is IQR / median.
    """

    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    ci_low: float
    ci_high: float
    rel_spread: float
    trustworthy: bool
    warning: str | None
    confidence: float = DEFAULT_CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def short_dict(self) -> dict[str, Any]:
        """The figures a quantized variant keeps in the report: p50, p95, p99, mean and n."""
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99, "mean": self.mean, "n": self.n}


@dataclass(frozen=True)
class LatencySamples:
    """Per-call latencies of one measurement, immutable and validated.

    samples_ms  one value per independent timed sample: that sample's duration / ``loops``
    loops       calls timed together in each sample (>= 1)
    warmup      untimed calls made before the first sample (>= 0)
    metadata    free-form, JSON-serialisable facts (runtime, threads, host); stored as a private
                deep copy, so later changes to the caller's dict do not leak in. Treat as read-only.

    >>> s = LatencySamples((1.0, 1.1, 0.9), loops=100, warmup=10)
    >>> s.summary().p50
    1.0
    """

    samples_ms: tuple[float, ...]
    loops: int = 1
    warmup: int = 0
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        values = tuple(self.samples_ms)
        if not values:
            raise BadInputError("latency samples are empty")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise BadInputError(f"latency sample {i} is not a number: {v!r}")
            if not math.isfinite(v) or v <= 0:
                raise BadInputError(f"latency sample {i} must be finite and > 0 ms, got {v!r}")
        object.__setattr__(self, "samples_ms", tuple(float(v) for v in values))
        for name, lowest in (("loops", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise BadInputError(f"latency samples: '{name}' must be an int >= {lowest}")
        if not isinstance(self.metadata, Mapping):
            raise BadInputError("latency samples: 'metadata' must be a mapping")
        try:
            # A JSON round trip is both the deep copy and the proof that to_dict() will serialise.
            copy = json.loads(json.dumps(dict(self.metadata), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"latency samples: metadata is not JSON: {exc}") from exc
        object.__setattr__(self, "metadata", copy)

    def summary(
        self, confidence: float = DEFAULT_CONFIDENCE, max_rel_spread: float = MAX_REL_SPREAD
    ) -> LatencySummary:
        x = np.sort(np.asarray(self.samples_ms, dtype=np.float64))
        n = len(x)
        # numpy's default "linear" method: position (n - 1) * q, interpolated
        p25, p50, p75, p90, p95, p99 = (
            float(v) for v in np.percentile(x, [25, 50, 75, 90, 95, 99])
        )
        ci_low, ci_high = quantile_ci(x, 0.5, confidence)
        rel_spread = (p75 - p25) / p50
        problems = []
        if ci_low is None or ci_high is None:
            problems.append(
                f"too few samples (n={n}) for a {confidence:.0%} confidence interval of the "
                f"median (need {samples_needed(0.5, confidence)}); showing the full range"
            )
        if rel_spread > max_rel_spread:
            problems.append(f"spread too wide to trust: IQR is {rel_spread:.0%} of the median")
        return LatencySummary(
            n=n,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            mean=float(x.mean()),
            std=float(x.std(ddof=1)) if n > 1 else 0.0,
            min=float(x[0]),
            max=float(x[-1]),
            ci_low=float(x[0]) if ci_low is None else ci_low,
            ci_high=float(x[-1]) if ci_high is None else ci_high,
            rel_spread=float(rel_spread),
            trustworthy=not problems,
            warning="; ".join(problems) or None,
            confidence=confidence,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_ms": list(self.samples_ms),
            "loops": self.loops,
            "warmup": self.warmup,
            "metadata": json.loads(json.dumps(self.metadata)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySamples:
        if not isinstance(data, Mapping):
            raise BadInputError("latency samples must be a JSON object")
        known = {"samples_ms", "loops", "warmup", "metadata"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"latency samples: unknown key(s) {', '.join(unknown)}")
        if "samples_ms" not in data:
            raise BadInputError("latency samples: missing 'samples_ms'")
        samples = data["samples_ms"]
        if isinstance(samples, str | bytes) or not isinstance(samples, Sequence):
            raise BadInputError("latency samples: 'samples_ms' must be a list of numbers")
        return cls(
            samples_ms=tuple(samples),
            loops=data.get("loops", 1),
            warmup=data.get("warmup", 0),
            metadata=data.get("metadata", {}),
        )


# --------------------------------------------------------------------------------------------
# Runs: one LatencySamples per process


def pooled(runs: Sequence[LatencySamples]) -> LatencySamples:
    """Every sample of several runs (one per process) as one set, for the pooled summary and the
    absolute checks. The runs' metadata stays with the runs."""
    return LatencySamples(tuple(v for r in runs for v in r.samples_ms))


def process_medians(runs: Sequence[LatencySamples]) -> np.ndarray:
    """Each run's median: the unit the comparisons across processes work on."""
    return np.array([float(np.median(r.samples_ms)) for r in runs])
