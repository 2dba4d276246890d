"""Verdicts on latency samples (PASS, FAIL, INCONCLUSIVE): a regression check, an absolute budget.

``compare_latency`` (is the current set slower than the baseline by more than a threshold?) and
``check_absolute`` (is a statistic such as p95 within a limit?) answer in the spirit of Chromium
Pinpoint's DIFFERENT / SAME / UNKNOWN: a verdict is never PASS when the samples are too few or too
noisy to rule a regression out. Each computes its numbers first (ratio, p-value, intervals) and
words the verdict apart from them. The samples, their summaries and the order-statistic intervals
these rest on are measurement, and live in ``edgekd.bench.stats``; only the gate judges.
"""

from __future__ import annotations

import enum
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.bench.stats import (
    DEFAULT_CONFIDENCE,
    LatencySamples,
    LatencySummary,
    quantile_ci,
    samples_needed,
)
from edgekd.errors import BadInputError


class Verdict(enum.StrEnum):
    """A gate verdict; a ``str`` so it compares equal to "PASS" and serialises as itself.

    NOT_MEASURED is a budget line whose figure the benchmark never took (no teacher, no labels, no
    memory probe): it is shown with why, and leaves the overall verdict alone unless the line is
    required (``gate --require``), where it counts as INCONCLUSIVE.
    """

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_MEASURED = "NOT MEASURED"


def _parse_statistic(statistic: str) -> float:
    """Turn "p95" into 0.95; "median" means "p50"."""
    s = statistic.strip().lower()
    if s == "median":
        s = "p50"
    try:
        pct = float(s[1:]) if s.startswith("p") else math.nan
    except ValueError:
        pct = math.nan
    if not 0.0 < pct < 100.0:
        raise BadInputError(f"unknown latency statistic {statistic!r}: use p50, p95, p99, ...")
    return pct / 100.0


@dataclass(frozen=True)
class Comparison:
    """Result of ``compare_latency``.

    ratio          current median / baseline median (> 1 is slower)
    p_value        one-sided Mann-Whitney U p-value for "current is slower than baseline"
    ci_low/ci_high a conservative CI of the ratio at level 1 - alpha (see ``compare_latency``)
    """

    verdict: Verdict
    ratio: float
    p_value: float
    threshold: float
    reason: str
    ci_low: float
    ci_high: float
    alpha: float
    baseline_n: int
    current_n: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        return d


@dataclass(frozen=True)
class BudgetCheck:
    """Result of ``check_absolute``: one statistic of the samples against an absolute limit."""

    verdict: Verdict
    statistic: str
    value_ms: float
    limit_ms: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        return d


def _ms(v: float) -> str:
    return f"{v:.4g} ms"


def compare_latency(
    baseline: LatencySamples,
    current: LatencySamples,
    threshold: float = 0.10,
    alpha: float = 0.01,
    min_samples: int = 10,
) -> Comparison:
    """Decide whether ``current`` regressed against ``baseline`` by more than ``threshold``.

    Rules, in order (``ratio`` = current median / baseline median, ``limit`` = 1 + threshold,
    ``p`` = one-sided Mann-Whitney U p-value, ``[lo, hi]`` = the ratio's CI):

    1. INCONCLUSIVE if either set has fewer than ``min_samples`` samples, or is too small for the
       ratio's CI to exist.
    2. If ratio > limit (slower than allowed):
       FAIL when p < alpha and both sets are trustworthy (asv's rule: the factor AND the U test);
       FAIL also when a set is noisy but even the CI's lower end is above the limit (so much slower
       that the noise cannot explain it); otherwise INCONCLUSIVE.
    3. If ratio <= limit: PASS only when both sets are trustworthy and hi <= limit, i.e. a
       regression above the threshold is ruled out at level 1 - alpha; otherwise INCONCLUSIVE.
       A significant slowdown below the threshold (say 5% against 10%) is a PASS.

    The ratio's CI is built from each median's distribution-free CI at level sqrt(1 - alpha):
    ``[cur.ci_low / base.ci_high, cur.ci_high / base.ci_low]``. When both medians lie in their
    intervals the ratio lies in this one, so (the two runs being independent) its coverage is at
    least 1 - alpha. It is conservative, needs no bootstrap and no shape assumption.

    >>> base = LatencySamples(tuple(1.0 + i / 1000 for i in range(50)))
    >>> compare_latency(base, base).verdict
    <Verdict.PASS: 'PASS'>
    """
    if not threshold >= 0 or not 0.0 < alpha < 1.0 or min_samples < 1:
        raise BadInputError("compare_latency needs threshold >= 0, 0 < alpha < 1, min_samples >= 1")
    n = _ratio_numbers(baseline, current, alpha)
    verdict, reason = _explain_comparison(n, threshold, alpha, min_samples)
    return Comparison(
        verdict, n.ratio, n.p, threshold, reason, n.lo, n.hi, alpha, n.base.n, n.cur.n
    )


@dataclass(frozen=True)
class _RatioNumbers:
    """What ``compare_latency`` decides on: the medians' ratio, its CI and the U test."""

    base: LatencySummary
    cur: LatencySummary
    ratio: float
    p: float
    lo: float
    hi: float
    have_ci: bool
    level: float  # the level of each median's CI, sqrt(1 - alpha)


def _ratio_numbers(
    baseline: LatencySamples, current: LatencySamples, alpha: float
) -> _RatioNumbers:
    from scipy.stats import mannwhitneyu

    base_s, cur_s = baseline.summary(), current.summary()
    p = float(mannwhitneyu(current.samples_ms, baseline.samples_ms, alternative="greater").pvalue)
    if not math.isfinite(p):  # degenerate (e.g. all values tied): no evidence of a difference
        p = 1.0
    level = math.sqrt(1.0 - alpha)
    b_lo, b_hi = quantile_ci(np.sort(baseline.samples_ms), 0.5, level)
    c_lo, c_hi = quantile_ci(np.sort(current.samples_ms), 0.5, level)
    # Without a CI (too few samples) the full ranges stand in, for information only: rule 1
    # of compare_latency makes that verdict INCONCLUSIVE.
    lo = (cur_s.min if c_lo is None else c_lo) / (base_s.max if b_hi is None else b_hi)
    hi = (cur_s.max if c_hi is None else c_hi) / (base_s.min if b_lo is None else b_lo)
    have_ci = None not in (b_lo, b_hi, c_lo, c_hi)
    return _RatioNumbers(base_s, cur_s, cur_s.p50 / base_s.p50, p, lo, hi, have_ci, level)


def _explain_comparison(
    n: _RatioNumbers, threshold: float, alpha: float, min_samples: int
) -> tuple[Verdict, str]:
    """``compare_latency``'s rules, in its docstring's order, and the words for each outcome."""
    nb, nc, ratio, p, lo, hi = n.base.n, n.cur.n, n.ratio, n.p, n.lo, n.hi
    limit = 1.0 + threshold
    change = f"current median {_ms(n.cur.p50)} is {ratio:.3f}x baseline {_ms(n.base.p50)}"
    ci_txt = f"{1 - alpha:.0%} CI of the ratio [{lo:.3f}, {hi:.3f}]"
    noisy = [
        f"{name}: {s.warning}"
        for name, s in (("baseline", n.base), ("current", n.cur))
        if not s.trustworthy
    ]
    if min(nb, nc) < min_samples:
        return (
            Verdict.INCONCLUSIVE,
            f"too few samples to decide (baseline n={nb}, current n={nc}; need {min_samples}).",
        )
    if not n.have_ci:
        need = samples_needed(0.5, n.level)
        return (
            Verdict.INCONCLUSIVE,
            f"too few samples for a {1 - alpha:.0%} CI of the ratio (baseline n={nb}, "
            f"current n={nc}; need {need} each).",
        )
    if ratio > limit:
        significant = p < alpha
        if significant and (not noisy or lo > limit):
            despite = "; the samples are noisy, but the CI clears the threshold" if noisy else ""
            return (
                Verdict.FAIL,
                f"{change}, above the {threshold:.0%} threshold (U test p={p:.2g} < {alpha:g}; "
                f"{ci_txt}{despite}).",
            )
        why = (
            f"not significant (U test p={p:.2g} >= {alpha:g})"
            if not significant
            else f"the samples are too noisy ({'; '.join(noisy)}) and the {ci_txt} reaches "
            f"below the threshold"
        )
        return (
            Verdict.INCONCLUSIVE,
            f"{change}, above the {threshold:.0%} threshold but {why}; re-measure.",
        )
    if noisy:
        return (
            Verdict.INCONCLUSIVE,
            f"{change}, but the samples are too noisy to rule out a regression "
            f"({'; '.join(noisy)}); re-measure on a quieter machine.",
        )
    if hi > limit:
        return (
            Verdict.INCONCLUSIVE,
            f"{change}, but a regression above {threshold:.0%} cannot be ruled out ({ci_txt}); "
            f"take more samples.",
        )
    return (
        Verdict.PASS,
        f"{change}, within the {threshold:.0%} threshold (U test p={p:.2g}; {ci_txt}).",
    )


def check_absolute(
    current: LatencySamples,
    limit_ms: float,
    statistic: str = "p95",
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_samples: int = 10,
) -> BudgetCheck:
    """Check one latency statistic (``"p50"``, ``"p95"``, ``"p99"``, ...) against ``limit_ms``.

    ``[lo, hi]`` is the statistic's distribution-free CI at ``confidence``. Rules, in order:

    1. INCONCLUSIVE if there are fewer than ``min_samples`` samples.
    2. INCONCLUSIVE if the samples are untrustworthy (see ``LatencySummary``) and the limit falls
       inside their range [min, max]: noise alone could put the statistic on either side.
    3. PASS if hi exists and hi <= limit: within the limit with the CI as margin.
    4. FAIL if lo exists and lo > limit: clearly over.
    5. INCONCLUSIVE otherwise: the limit is inside the CI, or n is too small for the bound needed
       (a p95 upper bound at 95% needs n >= 72); the reason says how many samples would do.

    >>> s = LatencySamples(tuple(1.0 + i / 1000 for i in range(100)))
    >>> check_absolute(s, limit_ms=2.0).verdict
    <Verdict.PASS: 'PASS'>
    """
    q = _parse_statistic(statistic)
    if not (isinstance(limit_ms, numbers.Real) and math.isfinite(limit_ms) and limit_ms > 0):
        raise BadInputError(f"latency limit must be a finite number > 0 ms, got {limit_ms!r}")
    x = np.sort(np.asarray(current.samples_ms))
    s = current.summary(confidence=confidence)
    value = float(np.percentile(x, q * 100))
    lo, hi = quantile_ci(x, q, confidence)
    name = f"p{q * 100:g}"

    def verdict(v: Verdict, reason: str) -> BudgetCheck:
        return BudgetCheck(v, name, value, float(limit_ms), lo, hi, confidence, reason)

    head = f"{name} {_ms(value)} vs limit {_ms(limit_ms)}"
    ci_txt = (
        f"{confidence:.0%} CI [{'-' if lo is None else _ms(lo)}, {'-' if hi is None else _ms(hi)}]"
    )
    if s.n < min_samples:
        return verdict(
            Verdict.INCONCLUSIVE, f"{head}: too few samples (n={s.n}; need {min_samples})."
        )
    if not s.trustworthy and s.min <= limit_ms <= s.max:
        return verdict(
            Verdict.INCONCLUSIVE,
            f"{head}: samples too noisy ({s.warning}) and the limit lies inside their range "
            f"[{_ms(s.min)}, {_ms(s.max)}]; re-measure.",
        )
    if hi is not None and hi <= limit_ms:
        return verdict(Verdict.PASS, f"{head}: within the limit ({ci_txt}).")
    if lo is not None and lo > limit_ms:
        return verdict(Verdict.FAIL, f"{head}: over the limit ({ci_txt}).")
    if lo is None or hi is None:
        return verdict(
            Verdict.INCONCLUSIVE,
            f"{head}: n={s.n} is too few to bound {name} at {confidence:.0%} "
            f"(need {samples_needed(q, confidence)}); take more samples.",
        )
    return verdict(
        Verdict.INCONCLUSIVE,
        f"{head}: the limit lies inside the measurement's uncertainty ({ci_txt}).",
    )
