"""LatencySamples / LatencySummary / verdicts, on hand-worked and stored sample sets (no timing)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from edgekd.bench.stats import (
    MAX_REL_SPREAD,
    LatencySamples,
    pooled,
    process_medians,
    quantile_ci_ranks,
    samples_needed,
)
from edgekd.errors import BadInputError
from edgekd.gate.checks import Verdict, check_absolute, compare_latency

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def sets() -> dict[str, LatencySamples]:
    raw = json.loads((FIXTURES / "latency_sets.json").read_text())
    return {name: LatencySamples.from_dict(d) for name, d in raw.items()}


# ---------------------------------------------------------------------------------- summary


def test_summary_of_1_to_10_matches_hand_worked_values():
    # numpy "linear": the q-quantile of x_0..x_9 sits at position 9q between neighbours.
    #   p50: 4.5  -> 5 + 0.5 * (6 - 5)  = 5.5      p90: 8.1  -> 9 + 0.1  = 9.1
    #   p95: 8.55 -> 9 + 0.55           = 9.55     p99: 8.91 -> 9 + 0.91 = 9.91
    #   p25: 2.25 -> 3.25,  p75: 6.75 -> 7.75,  so rel_spread = IQR / p50 = 4.5 / 5.5
    # std (ddof=1) = sqrt(sum (i - 5.5)^2 / 9) = sqrt(82.5 / 9)
    # Median CI at 95%, B ~ Bin(10, 1/2), tail 0.025:
    #   P(B <= 1) = (1 + 10) / 1024 = 0.0107 <= 0.025 < P(B <= 2) = 56 / 1024 = 0.0547,
    #   so lower = X_(2) = 2 and, by symmetry, upper = X_(9) = 9 (coverage 1 - 22/1024 = 97.9%).
    s = LatencySamples(tuple(float(i) for i in range(1, 11))).summary()
    assert s.n == 10
    assert (s.p50, s.p90, s.p95, s.p99) == pytest.approx((5.5, 9.1, 9.55, 9.91))
    assert s.mean == pytest.approx(5.5)
    assert s.std == pytest.approx(math.sqrt(82.5 / 9))
    assert (s.min, s.max) == (1.0, 10.0)
    assert (s.ci_low, s.ci_high) == (2.0, 9.0)
    assert s.rel_spread == pytest.approx(4.5 / 5.5)
    # the CI exists, but an IQR of 82% of the median is far too wide to trust
    assert not s.trustworthy
    assert s.warning == "spread too wide to trust: IQR is 82% of the median"


def test_median_ci_of_1_to_20_uses_ranks_6_and_15():
    # B ~ Bin(20, 1/2): P(B <= 5) = (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20
    #                             = 21700 / 1048576 = 0.0207 <= 0.025,
    #                   P(B <= 6) = (21700 + 38760) / 2^20 = 0.0577 > 0.025,
    # so the 95% CI is [X_(6), X_(15)] = [6, 15].
    s = LatencySamples(tuple(float(i) for i in range(1, 21))).summary()
    assert (s.ci_low, s.ci_high) == (6.0, 15.0)
    assert s.p50 == 10.5


def test_tiny_set_reports_full_range_and_is_untrustworthy():
    # n = 5: even P(B <= 0) = 1/32 = 0.031 > 0.025, so no 95% CI exists: the full range stands in.
    # sorted 1, 1, 3, 4, 5: p50 = 3, p90 at 3.6 -> 4.6, p95 at 3.8 -> 4.8, p99 at 3.96 -> 4.96,
    # p25 = x_1 = 1, p75 = x_3 = 4, rel_spread = 3 / 3.
    s = LatencySamples((3.0, 1.0, 4.0, 1.0, 5.0)).summary()
    assert (s.p50, s.p90, s.p95, s.p99) == pytest.approx((3.0, 4.6, 4.8, 4.96))
    assert (s.ci_low, s.ci_high) == (1.0, 5.0)
    assert s.rel_spread == pytest.approx(1.0)
    assert not s.trustworthy
    assert "too few samples (n=5)" in s.warning and "need 6" in s.warning


def test_single_sample_summary():
    s = LatencySamples((2.0,)).summary()
    assert (s.n, s.p50, s.std, s.ci_low, s.ci_high) == (1, 2.0, 0.0, 2.0, 2.0)
    assert not s.trustworthy


def test_tight_set_is_trustworthy(sets):
    s = sets["base"].summary()
    assert s.trustworthy and s.warning is None
    assert s.rel_spread <= MAX_REL_SPREAD
    assert s.ci_low <= s.p50 <= s.ci_high


@pytest.mark.parametrize(
    ("n", "q", "expected"),
    [
        (10, 0.5, (1, 8)),  # X_(2), X_(9): worked above
        (20, 0.5, (5, 14)),  # X_(6), X_(15)
        (5, 0.5, (None, None)),  # 1/32 > 0.025
        (6, 0.5, (0, 5)),  # 1/64 = 0.0156 <= 0.025: the full range is a real 96.9% CI
        # p95, n = 30: P(B >= 30) = 0.95^30 = 0.21 > 0.025, so no upper bound;
        # P(B <= 25) = 0.0156 <= 0.025 < P(B <= 26) = 0.061, so lower = X_(26)
        (30, 0.95, (25, None)),
    ],
)
def test_quantile_ci_ranks(n, q, expected):
    assert quantile_ci_ranks(n, q, 0.95) == expected


def test_samples_needed():
    # median: 0.5^n <= 0.025 from n = 6; p95: 0.95^n <= 0.025 from n = 72 (0.95^71 = 0.0262)
    assert samples_needed(0.5) == 6
    assert samples_needed(0.95) == 72
    assert samples_needed(0.5, confidence=0.99) == 8  # 0.5^8 = 0.0039 <= 0.005 < 0.5^7


def test_summary_to_dict_is_strict_json(sets):
    d = sets["wild_a"].summary().to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d


# ---------------------------------------------------------------------------------- samples


@pytest.mark.parametrize(
    "bad",
    [(), (1.0, -1.0), (1.0, 0.0), (1.0, math.nan), (math.inf,), ("1.0",), (True,), (None,)],
)
def test_samples_rejects_bad_values(bad):
    with pytest.raises(BadInputError):
        LatencySamples(bad)


@pytest.mark.parametrize("kw", [{"loops": 0}, {"loops": 1.5}, {"loops": True}, {"warmup": -1}])
def test_samples_rejects_bad_counts(kw):
    with pytest.raises(BadInputError):
        LatencySamples((1.0,), **kw)


def test_samples_rejects_metadata_that_is_not_json():
    with pytest.raises(BadInputError):
        LatencySamples((1.0,), metadata={"when": object()})
    with pytest.raises(BadInputError):
        LatencySamples((1.0,), metadata={"x": math.nan})


def test_samples_are_immutable_and_own_their_metadata():
    meta = {"runtime": "ort_cpu", "threads": [1]}
    s = LatencySamples([1, 2, 3], loops=4, warmup=2, metadata=meta)
    assert s.samples_ms == (1.0, 2.0, 3.0) and isinstance(s.samples_ms, tuple)
    meta["threads"].append(2)
    assert s.metadata == {"runtime": "ort_cpu", "threads": [1]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.loops = 5  # type: ignore[misc]
    hash(s)  # usable as a dict key despite the metadata dict


def test_samples_json_round_trip(sets):
    s = LatencySamples(
        (0.1, 1 / 3, 2.718281828459045), loops=7, warmup=3, metadata={"host": "ci", "n": [1, 2]}
    )
    back = LatencySamples.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    for original in sets.values():
        assert LatencySamples.from_dict(json.loads(json.dumps(original.to_dict()))) == original


@pytest.mark.parametrize(
    "data",
    [
        {"samples_ms": [1.0], "loops": 1, "surprise": 1},
        {"loops": 1},
        {"samples_ms": "1.0"},
        [1.0, 2.0],
    ],
)
def test_from_dict_rejects_malformed(data):
    with pytest.raises(BadInputError):
        LatencySamples.from_dict(data)


# ---------------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("baseline", "current", "expected"),
    [
        ("base", "base", Verdict.PASS),  # identical
        ("base", "base_rerun", Verdict.PASS),  # another draw of the same distribution
        ("base", "slower_3x", Verdict.FAIL),
        ("base", "slower_1_05x", Verdict.PASS),  # significant, but below the 10% threshold
        ("base", "faster_2x", Verdict.PASS),
        ("wild_a", "wild_b", Verdict.INCONCLUSIVE),  # lognormal sigma 1.5 on both sides
        ("base", "wild_b", Verdict.INCONCLUSIVE),
        ("wild_a", "base", Verdict.INCONCLUSIVE),  # "faster", but the baseline is noise
        ("noisy_base", "noisy_3x", Verdict.FAIL),  # noisy, but the ratio's CI clears 1.1
        ("noisy_base", "noisy_1_3x", Verdict.INCONCLUSIVE),  # significant, CI reaches below 1.1
        ("noisy_base", "base", Verdict.INCONCLUSIVE),
    ],
)
def test_compare_verdicts_on_stored_sets(sets, baseline, current, expected):
    c = compare_latency(sets[baseline], sets[current])
    assert c.verdict == expected, c.reason
    assert c.ci_low <= c.ratio <= c.ci_high
    assert json.loads(json.dumps(c.to_dict(), allow_nan=False))["verdict"] == expected


def test_small_significant_slowdown_is_a_pass_and_says_so(sets):
    c = compare_latency(sets["base"], sets["slower_1_05x"])
    assert c.p_value < 0.01 and 1.0 < c.ratio < 1.10
    assert c.ci_high <= 1.10
    assert "within the 10% threshold" in c.reason


def test_threshold_is_respected(sets):
    # the same 4.7% slowdown fails a 2% threshold
    c = compare_latency(sets["base"], sets["slower_1_05x"], threshold=0.02)
    assert c.verdict == Verdict.FAIL


def test_slower_than_threshold_but_not_significant_is_inconclusive():
    # Both sets trustworthy (IQR 17.5% of the median), current = baseline * 1.15, n = 10 each:
    # the U test gives p = 0.022, not below alpha = 0.01.
    base = LatencySamples((0.80, 0.85, 0.90, 0.95, 1.00, 1.00, 1.05, 1.10, 1.15, 1.20))
    cur = LatencySamples(tuple(v * 1.15 for v in base.samples_ms))
    assert base.summary().trustworthy and cur.summary().trustworthy
    c = compare_latency(base, cur)
    assert c.verdict == Verdict.INCONCLUSIVE
    assert c.ratio == pytest.approx(1.15) and 0.01 < c.p_value < 0.05
    assert "not significant" in c.reason


def test_identical_but_too_few_to_rule_out_a_regression_is_inconclusive():
    # n = 12 at the 99.5% per-median level: P(B <= 0) = 2^-12 <= 0.0025 < P(B <= 1) = 13 * 2^-12,
    # so each median's CI is the full range and the ratio's CI is [0.95/1.06, 1.06/0.95].
    values = tuple(round(0.95 + 0.01 * i, 2) for i in range(12))
    c = compare_latency(LatencySamples(values), LatencySamples(values))
    assert c.ratio == 1.0
    assert c.ci_high == pytest.approx(1.06 / 0.95)
    assert c.verdict == Verdict.INCONCLUSIVE
    assert "cannot be ruled out" in c.reason


@pytest.mark.parametrize("factor", [0.5, 1.0, 3.0])
def test_three_samples_are_never_a_pass(factor):
    base = LatencySamples((1.00, 1.01, 0.99))
    cur = LatencySamples(tuple(v * factor for v in base.samples_ms))
    c = compare_latency(base, cur)
    assert c.verdict == Verdict.INCONCLUSIVE
    assert "too few samples" in c.reason


def test_min_samples_below_ci_floor_is_still_inconclusive():
    # min_samples=3 lets the sets through rule 1, but 3 samples cannot give a 99% CI of the ratio
    base = LatencySamples((1.00, 1.01, 0.99))
    c = compare_latency(base, base, min_samples=3)
    assert c.verdict == Verdict.INCONCLUSIVE
    assert "need 9 each" in c.reason  # 0.5^9 <= (1 - sqrt(0.99)) / 2 = 0.0025 < 0.5^8


@pytest.mark.parametrize("noisy", ["wild_a", "wild_b", "noisy_base"])
@pytest.mark.parametrize("other", ["base", "faster_2x", "wild_a", "noisy_base"])
def test_noisy_sets_are_never_a_pass(sets, noisy, other):
    assert compare_latency(sets[noisy], sets[other]).verdict != Verdict.PASS
    assert compare_latency(sets[other], sets[noisy]).verdict != Verdict.PASS


def test_compare_rejects_bad_parameters(sets):
    with pytest.raises(BadInputError):
        compare_latency(sets["base"], sets["base"], alpha=0.0)
    with pytest.raises(BadInputError):
        compare_latency(sets["base"], sets["base"], threshold=-0.1)


def test_constant_samples_do_not_produce_nan():
    flat = LatencySamples((1.0,) * 20)
    c = compare_latency(flat, flat)
    assert c.verdict == Verdict.PASS and math.isfinite(c.p_value)


# ---------------------------------------------------------------------------------- absolute


@pytest.fixture(scope="module")
def ramp100() -> LatencySamples:
    # 1.000, 1.001, ..., 1.099 ms: p95 at position 94.05 -> 1.09405; its 95% CI is [1.089, 1.099]
    return LatencySamples(tuple(1.0 + i / 1000 for i in range(100)))


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (2.0, Verdict.PASS),  # CI upper 1.099 <= 2
        (1.099, Verdict.PASS),  # exactly the CI's upper end
        (1.095, Verdict.INCONCLUSIVE),  # inside the CI
        (1.09, Verdict.INCONCLUSIVE),  # inside the CI, below the point estimate
        (1.0, Verdict.FAIL),  # CI lower 1.089 > 1
    ],
)
def test_check_absolute_p95(ramp100, limit, expected):
    b = check_absolute(ramp100, limit_ms=limit)
    assert b.verdict == expected, b.reason
    assert b.statistic == "p95" and b.value_ms == pytest.approx(1.09405)
    assert (b.ci_low, b.ci_high) == (1.089, 1.099)
    json.dumps(b.to_dict(), allow_nan=False)


def test_check_absolute_other_statistics(ramp100):
    assert check_absolute(ramp100, 1.06, statistic="p50").verdict == Verdict.PASS
    assert check_absolute(ramp100, 1.06, statistic="median").verdict == Verdict.PASS
    assert check_absolute(ramp100, 1.06, statistic="p99").verdict != Verdict.PASS
    with pytest.raises(BadInputError):
        check_absolute(ramp100, 1.0, statistic="mean")
    with pytest.raises(BadInputError):
        check_absolute(ramp100, -1.0)


def test_check_absolute_needs_enough_samples_to_bound_the_statistic():
    ramp30 = LatencySamples(tuple(1.0 + i / 1000 for i in range(30)))
    far_under = check_absolute(ramp30, limit_ms=5.0)
    assert far_under.verdict == Verdict.INCONCLUSIVE and "need 72" in far_under.reason
    # a lower bound exists at n = 30 (X_(26)), so clearly-over still fails
    assert check_absolute(ramp30, limit_ms=0.5).verdict == Verdict.FAIL
    few = LatencySamples((1.0, 1.0, 1.0))
    assert check_absolute(few, limit_ms=100.0).verdict == Verdict.INCONCLUSIVE


def test_check_absolute_noisy_samples(sets):
    wild = sets["wild_a"]  # range ~0.022 .. 20 ms, IQR 219% of the median
    inside = check_absolute(wild, limit_ms=1.0, statistic="p50")
    assert inside.verdict == Verdict.INCONCLUSIVE and "too noisy" in inside.reason
    # the noise does not matter when the limit is outside all of it
    assert check_absolute(wild, limit_ms=1000.0, statistic="p50").verdict == Verdict.PASS
    assert check_absolute(wild, limit_ms=0.001, statistic="p50").verdict == Verdict.FAIL


def test_pooled_runs_and_the_short_summary():
    runs = [LatencySamples((1.0, 2.0, 3.0)), LatencySamples((4.0, 5.0))]
    assert pooled(runs).samples_ms == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert process_medians(runs).tolist() == [2.0, 4.5]
    # the keys a quantized variant has always kept in report.json
    short = pooled(runs).summary().short_dict()
    assert short == {"p50": 3.0, "p95": 4.8, "p99": 4.96, "mean": 3.0, "n": 5}


def test_binomial_tails_match_hand_counts():
    """Binomial(10, 1/2) by hand: P(B <= 1) = (1 + 10) / 1024, P(B > 8) = (10 + 1) / 1024, and
    Binomial(72, 0.95): P(B > 71) = 0.95^72 (the reason a p95 bound needs 72 samples)."""
    from edgekd.bench.stats import _binomial_tails

    cdf, sf = _binomial_tails(10, 0.5)
    assert cdf[1] == pytest.approx(11 / 1024, rel=1e-12)
    assert sf[8] == pytest.approx(11 / 1024, rel=1e-12)
    assert cdf[10] == pytest.approx(1.0) and sf[10] == 0.0
    _, sf = _binomial_tails(72, 0.95)
    assert sf[71] == pytest.approx(0.95**72, rel=1e-9)
