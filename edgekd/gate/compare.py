"""Comparing latencies measured in several processes: regressions and relative budgets.

Samples from one process share that process's luck, so a Mann-Whitney U test on them calls a 1-2%
difference significant (p ~ 1e-14) while the next process's median may sit 10% or more away. The
independent unit is the process: this module compares per-process medians, and asks the samples
for their U test as well, so a verdict needs both levels to agree (asv's rule, a factor AND a
significance test, applied twice).

Process level: with per-process medians b_1..b_k (baseline) and c_1..c_m (current), the ratio is
``exp(mean(log c) - mean(log b))`` (a ratio of geometric means) and its confidence interval and
one-sided p-value come from Welch's t test on the log medians (Welch 1947, "The generalization of
'Student's' problem when several different population variances are involved", Biometrika 34).
With 3 processes a side, a rank test cannot reach p < 0.01 (its smallest one-sided p-value is
1/20), which is why the t test on logs is used here: process medians are positive and their
log-spread is roughly symmetric, which is what it assumes.

With many processes a side (``RANK_PROCESSES``, reached when the gate measures until decided), the
interval and p-value come instead from ranks: the Hodges-Lehmann estimate of the shift in log
medians and its distribution-free interval from the Mann-Whitney statistic (Hodges & Lehmann 1963,
"Estimates of location based on rank tests", Ann. Math. Statist. 34; the interval as in Hollander
& Wolfe, "Nonparametric Statistical Methods", section 4.3, normal approximation). On a busy host
process medians are often bimodal (a process that shares its core with a neighbour runs 1.5x
slower); those outliers widen a t interval on every side alike, but barely move a rank interval.

Paired (``compare_pairs``): when the gate measures both sides again, a round is one process that
times the model and the baseline's model a sample of each in turn, so the round's ratio of medians
carries the load of those moments on both sides and a drift of the machine cancels in it; two
independent sets of processes on a busy host differ by the drift as much as by the models. The
ratios' interval is the Hodges-Lehmann one for a one-sample location (Walsh averages of the log
ratios, their exact Wilcoxon signed-rank distribution; Hollander & Wolfe section 3.2), which a
round hit by a neighbour on one side barely moves.

``spread`` is the largest ``max/min - 1`` of the process medians within one side: how far the
machine moved the same model between processes. When it exceeds the threshold, or a side's pooled
samples are untrustworthy (``LatencySummary.trustworthy``), a change of the threshold's size could
be noise, so the answer is INCONCLUSIVE unless the interval settles it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.bench.stats import (
    DEFAULT_CONFIDENCE,
    LatencySamples,
    pooled,
    process_medians,
    quantile_ci_ranks,
)
from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict, compare_latency

MIN_PROCESSES = 2
RANK_PROCESSES = 8  # from here on, both sides: the rank interval (its normal approximation holds)
# The fewest pairs whose signed-rank interval at 98% can exclude a ratio at all: with n pairs the
# smallest two-sided tail is 2 * 2**-n, which is <= 0.02 from n = 7 on (one more for room).
MIN_PAIRS = 8

Pair = tuple[LatencySamples, LatencySamples]  # (current, baseline), measured in the same round


@dataclass(frozen=True)
class ProcessComparison:
    """Result of ``compare_processes`` or ``check_ratio``.

    ratio           current / baseline, geometric means of the per-process medians
    ci_low/ci_high  the ratio's interval (process level; sample level with one process a side)
    p_value         one-sided Welch t p-value on log medians, "current is slower" (1.0 if n/a)
    samples_p_value one-sided Mann-Whitney U p-value on the pooled raw samples
    spread          largest max/min - 1 of the process medians within either side
    """

    verdict: Verdict
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    samples_p_value: float
    spread: float
    limit: float
    reason: str
    baseline_processes: int
    current_processes: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        return d


def _spread(medians: np.ndarray) -> float:
    return float(medians.max() / medians.min() - 1.0)


def _welch(
    base: np.ndarray, cur: np.ndarray, confidence: float
) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, one-sided p) from Welch's t on the log medians."""
    from scipy.stats import t as student_t

    lb, lc = np.log(base), np.log(cur)
    diff = float(lc.mean() - lb.mean())
    vb, vc = lb.var(ddof=1) / len(lb), lc.var(ddof=1) / len(lc)
    se = math.sqrt(vb + vc)
    if se == 0.0:  # every process gave the same median on both sides: no noise to test against
        return math.exp(diff), math.exp(diff), math.exp(diff), 0.0 if diff > 0 else 1.0
    # Welch-Satterthwaite degrees of freedom; a side with zero variance contributes nothing.
    den = sum(v * v / (n - 1) for v, n in ((vb, len(lb)), (vc, len(lc))) if v > 0)
    df = (vb + vc) ** 2 / den
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se
    p = float(student_t.sf(diff / se, df))
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half), p


def _hodges_lehmann(
    base: np.ndarray, cur: np.ndarray, confidence: float
) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, one-sided p) from ranks: the Hodges-Lehmann shift of the log
    medians, its interval [D(C), D(N + 1 - C)] over the N = k m sorted differences with
    C = floor(N / 2 - z sqrt(k m (k + m + 1) / 12)), and the Mann-Whitney p for "current slower".

    >>> b = np.exp(np.arange(1.0, 9.0)); c = b * np.exp(10.0)  # a shift of exactly 10 in logs
    >>> [round(math.log(v), 6) for v in _hodges_lehmann(b, c, 0.98)[:3]]  # by hand: D(9), D(56)
    [10.0, 6.0, 14.0]
    """
    from statistics import NormalDist

    lb, lc = np.log(base), np.log(cur)
    k, m = len(lb), len(lc)
    diffs = np.sort((lc[:, None] - lb[None, :]).ravel())
    n = diffs.size
    sd = math.sqrt(k * m * (k + m + 1) / 12.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    c = max(1, math.floor(n / 2.0 - z * sd))  # 1-based rank of the lower bound
    shift = float(np.median(diffs))
    u = float((diffs > 0).sum() + 0.5 * (diffs == 0).sum())  # pairs where current is slower
    p = 1.0 - NormalDist().cdf((u - n / 2.0 - 0.5) / sd)  # with a continuity correction
    return math.exp(shift), math.exp(diffs[c - 1]), math.exp(diffs[n - c]), p


def _sample_ratio_ci(
    base: LatencySamples, cur: LatencySamples, confidence: float
) -> tuple[float | None, float | None]:
    """The ratio's interval from each median's order-statistic interval at sqrt(confidence)."""
    level = math.sqrt(confidence)
    b, c = np.sort(base.samples_ms), np.sort(cur.samples_ms)
    bl, bh = quantile_ci_ranks(len(b), 0.5, level)
    cl, ch = quantile_ci_ranks(len(c), 0.5, level)
    if None in (bl, bh, cl, ch):
        return None, None
    return float(c[cl] / b[bh]), float(c[ch] / b[bl])


def _check_args(baseline, current, threshold: float, alpha: float) -> None:
    if not baseline or not current:
        raise BadInputError("a latency comparison needs samples from at least one process a side")
    if not (threshold >= 0 and 0.0 < alpha < 1.0):
        raise BadInputError("a latency comparison needs threshold >= 0 and 0 < alpha < 1")


def compare_processes(
    baseline: Sequence[LatencySamples],
    current: Sequence[LatencySamples],
    threshold: float = 0.10,
    alpha: float = 0.01,
    min_samples: int = 10,
) -> ProcessComparison:
    """Did ``current`` regress by more than ``threshold`` against ``baseline``? (One run a process.)

    Rules, in order (``limit`` = 1 + threshold; ``r``, ``[lo, hi]``, ``p`` at the process level;
    ``p_u`` the U test on the pooled samples):

    1. INCONCLUSIVE with fewer than 2 processes on a side (one process cannot show how far
       medians move between processes) or fewer than ``min_samples`` pooled samples.
    2. r > limit: FAIL when p < alpha and p_u < alpha (a factor AND significance at both levels)
       and either the run is quiet or lo > limit (the change clears the noise); otherwise
       INCONCLUSIVE. Quiet: the spread is within the threshold and both sides' pooled samples
       are trustworthy.
    3. r <= limit: PASS when the run is quiet, or when hi <= limit (a regression past the limit is
       ruled out despite the noise); otherwise INCONCLUSIVE.

    >>> runs = [LatencySamples(tuple(1.0 + i / 1000 for i in range(30)))] * 3
    >>> compare_processes(runs, runs).verdict
    <Verdict.PASS: 'PASS'>
    """
    _check_args(baseline, current, threshold, alpha)
    limit = 1.0 + threshold
    b_med, c_med = process_medians(baseline), process_medians(current)
    spread = max(_spread(b_med), _spread(c_med))
    samples = compare_latency(
        pooled(baseline), pooled(current), threshold, alpha, min_samples=min_samples
    )
    k, m = len(baseline), len(current)

    def verdict(v: Verdict, r: float, lo: float, hi: float, p: float, reason: str):
        return ProcessComparison(v, r, lo, hi, p, samples.p_value, spread, limit, reason, k, m)

    if min(k, m) < MIN_PROCESSES:
        r = float(np.exp(np.log(c_med).mean() - np.log(b_med).mean()))
        return verdict(
            Verdict.INCONCLUSIVE,
            r,
            samples.ci_low,
            samples.ci_high,
            1.0,
            f"ratio {r:.3f}x, but a comparison across runs needs >= {MIN_PROCESSES} processes "
            f"a side (baseline {k}, current {m}): one process cannot show how far medians move "
            "between processes (bench --processes 3).",
        )
    if min(samples.baseline_n, samples.current_n) < min_samples:
        return verdict(Verdict.INCONCLUSIVE, samples.ratio, 0.0, math.inf, 1.0, samples.reason)
    by_ranks = min(k, m) >= RANK_PROCESSES
    interval = _hodges_lehmann if by_ranks else _welch
    r, lo, hi, p = welch = interval(b_med, c_med, 1.0 - 2.0 * alpha)
    head = (
        f"current is {r:.3f}x baseline (process medians {_list(c_med)} vs {_list(b_med)} ms; "
        f"{1 - 2 * alpha:.0%} CI [{lo:.3f}, {hi:.3f}]"
        + (f", from ranks over {k} and {m} processes)" if by_ranks else ")")
    )
    noise = _noise(baseline, current, spread, threshold)
    v, reason = _explain_regression(head, welch, samples.p_value, noise, threshold, alpha)
    return verdict(v, r, lo, hi, p, reason)


def _noise(
    baseline: Sequence[LatencySamples],
    current: Sequence[LatencySamples],
    spread: float,
    threshold: float,
) -> str:
    """Why a change of the threshold's size could be noise ("" when the run is quiet)."""
    wide = [
        f"{side}'s samples are too spread out ({runs_summary.warning})"
        for side, runs_summary in (
            ("baseline", pooled(baseline).summary()),
            ("current", pooled(current).summary()),
        )
        if not runs_summary.trustworthy
    ]
    return "; ".join(
        ([f"process medians within a run differ by up to {spread:.0%}"] if spread > threshold
         else []) + wide
    )  # fmt: skip


def _explain_regression(
    head: str,
    welch: tuple[float, float, float, float],
    samples_p: float,
    noise: str,
    threshold: float,
    alpha: float,
) -> tuple[Verdict, str]:
    """``compare_processes``' rules 2 and 3, and the words for each outcome."""
    r, lo, hi, p = welch
    limit = 1.0 + threshold
    noisy = bool(noise)
    if r > limit:
        significant = p < alpha and samples_p < alpha
        if significant and (not noisy or lo > limit):
            return (
                Verdict.FAIL,
                f"{head}: above the {threshold:.0%} threshold, significant across processes "
                f"(Welch t p={p:.2g}) and samples (U test p={samples_p:.2g})"
                + (f"; {noise}, but the CI clears the threshold" if noisy else "")
                + ".",
            )
        why = (
            f"not significant (Welch t p={p:.2g}, U test p={samples_p:.2g}; need both < {alpha:g})"
            if not significant
            else f"{noise}, and the CI reaches below the threshold"
        )
        return (
            Verdict.INCONCLUSIVE,
            f"{head}: above the {threshold:.0%} threshold but {why}; re-measure.",
        )
    if noisy and hi > limit:
        return (
            Verdict.INCONCLUSIVE,
            f"{head}: within the threshold, but {noise}, so a regression of the threshold's size "
            "could hide in the noise; re-measure on a quieter machine.",
        )
    return Verdict.PASS, f"{head}: within the {threshold:.0%} threshold."


def check_ratio(
    current: Sequence[LatencySamples],
    reference: Sequence[LatencySamples],
    limit: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ProcessComparison:
    """A relative budget: is current's latency at most ``limit`` x reference's (same run)?

    Like ``check_absolute``: PASS when the ratio's interval lies at or below the limit, FAIL when
    it lies above, INCONCLUSIVE when the limit is inside it. The interval is the process-level one
    (Welch t on log medians, two-sided at ``confidence``) with >= 2 processes a side, else the
    sample-level one (from the medians' order-statistic intervals), which ignores drift between
    processes and says so.

    >>> fast = [LatencySamples(tuple(1.0 + i / 1000 for i in range(30)))] * 3
    >>> slow = [LatencySamples(tuple(10.0 + i / 100 for i in range(30)))] * 3
    >>> check_ratio(fast, slow, limit=0.2).verdict
    <Verdict.PASS: 'PASS'>
    """
    _check_args(reference, current, 0.0, 0.5)
    if not (limit > 0 and math.isfinite(limit)):
        raise BadInputError(f"a relative latency limit must be a finite number > 0, got {limit!r}")
    c_med, r_med = process_medians(current), process_medians(reference)
    spread = max(_spread(c_med), _spread(r_med))
    pooled_c, pooled_r = pooled(current), pooled(reference)
    samples = compare_latency(pooled_r, pooled_c, threshold=0.0, alpha=0.01, min_samples=1)
    k, m = len(reference), len(current)
    if min(k, m) >= MIN_PROCESSES:
        r, lo, hi, p = _welch(r_med, c_med, confidence)
        level = "across processes"
    else:
        r = float(np.median(pooled_c.samples_ms) / np.median(pooled_r.samples_ms))
        lo, hi = _sample_ratio_ci(pooled_r, pooled_c, confidence)
        p = 1.0
        level = "from one process a side, blind to drift between processes"
    head = f"ratio {r:.3f}x vs limit {limit:g}x"

    def verdict(v: Verdict, reason: str, lo_=lo, hi_=hi) -> ProcessComparison:
        lo_ = 0.0 if lo_ is None else lo_
        hi_ = math.inf if hi_ is None else hi_
        return ProcessComparison(v, r, lo_, hi_, p, samples.p_value, spread, limit, reason, k, m)

    if lo is None or hi is None:
        return verdict(Verdict.INCONCLUSIVE, f"{head}: too few samples for an interval.")
    ci = f"{confidence:.0%} CI [{lo:.3f}, {hi:.3f}] {level}"
    if hi <= limit:
        return verdict(Verdict.PASS, f"{head}: within the limit ({ci}).")
    if lo > limit:
        return verdict(Verdict.FAIL, f"{head}: over the limit ({ci}).")
    return verdict(
        Verdict.INCONCLUSIVE, f"{head}: the limit lies inside the uncertainty ({ci}); re-measure."
    )


def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ = w) for w = 0..n(n+1)/2 under the null: each rank's sign a fair coin (exact)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts / 2.0**n


def _signed_rank(d: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, one-sided p) for paired log ratios ``d``: the Hodges-Lehmann
    estimate (the median of the Walsh averages (d_i + d_j) / 2, i <= j), its interval
    [W(C), W(N + 1 - C)] over the N = n(n+1)/2 sorted Walsh averages, C the largest rank with
    P(W+ <= C - 1) <= (1 - confidence) / 2, and the exact p of W+ for "current slower".

    >>> [round(math.log(v), 6) for v in _signed_rank(np.arange(1.0, 9.0), 0.98)[:3]]  # by hand
    [4.5, 1.5, 7.5]
    """
    n = len(d)
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2.0)
    null = np.cumsum(_signed_rank_null(n))  # P(W+ <= w)
    tail = (1.0 - confidence) / 2.0
    c = max(1, int(np.searchsorted(null, tail, side="right")))  # P(W+ <= c - 1) <= tail
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = int(ranks[d > 0].sum())
    p = float(1.0 - (null[w_plus - 1] if w_plus > 0 else 0.0))  # P(W+ >= w_plus)
    return (
        math.exp(float(np.median(walsh))),
        math.exp(float(walsh[c - 1])),
        math.exp(float(walsh[len(walsh) - c])),
        p,
    )


def compare_pairs(
    pairs: Sequence[Pair], threshold: float = 0.10, alpha: float = 0.01
) -> ProcessComparison:
    """Did current regress by more than ``threshold``, judged on rounds measured back to back?

    Each pair is (current, baseline) from one round (``edgekd.gate.remeasure``), already cleaned
    of descheduled samples; the unit is the round's log ratio of medians. FAIL when the ratio's
    interval (two-sided at 1 - 2 alpha) lies above 1 + threshold, PASS when it lies at or below,
    INCONCLUSIVE while it straddles the limit or with fewer than ``MIN_PAIRS`` pairs.

    >>> base = LatencySamples(tuple(1.0 + i / 1000 for i in range(30)))
    >>> slow = LatencySamples(tuple(1.5 + i / 1000 for i in range(30)))
    >>> compare_pairs([(slow, base)] * 8).verdict
    <Verdict.FAIL: 'FAIL'>
    """
    limit = 1.0 + threshold
    if not (threshold >= 0 and 0.0 < alpha < 0.5):
        raise BadInputError("a latency comparison needs threshold >= 0 and 0 < alpha < 0.5")
    cur = process_medians([c for c, _ in pairs])
    base = process_medians([b for _, b in pairs])
    n = len(pairs)
    spread = max(_spread(cur), _spread(base)) if n else 0.0
    if n < MIN_PAIRS:
        return ProcessComparison(
            Verdict.INCONCLUSIVE, math.nan, 0.0, math.inf, 1.0, 1.0, spread, limit,
            f"{n} paired round(s); a paired interval needs >= {MIN_PAIRS}.", n, n,
        )  # fmt: skip
    d = np.log(cur) - np.log(base)
    r, lo, hi, p = _signed_rank(d, 1.0 - 2.0 * alpha)
    head = (
        f"current is {r:.3f}x baseline, paired over {n} rounds timed in turns (round "
        f"ratios {_list(np.exp(d))}; {1 - 2 * alpha:.0%} CI [{lo:.3f}, {hi:.3f}], signed ranks)"
    )
    if lo > limit:
        v, why = Verdict.FAIL, f"above the {threshold:.0%} threshold (signed-rank p={p:.2g})"
    elif hi <= limit:
        v, why = Verdict.PASS, f"within the {threshold:.0%} threshold"
    else:
        v, why = Verdict.INCONCLUSIVE, f"the {threshold:.0%} threshold lies inside the interval"
    return ProcessComparison(v, r, lo, hi, p, p, spread, limit, f"{head}: {why}.", n, n)


def _list(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
