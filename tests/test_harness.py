"""The latency harness, driven by a fake clock: call counts and loop logic, never real timings."""

from __future__ import annotations

import gc
import json
import math

import pytest

from edgekd.bench.harness import measure_latency, measure_throughput
from edgekd.errors import BadInputError


class FakeWorld:
    """A clock in integer nanoseconds and a ``run`` that advances it by a chosen cost per call."""

    def __init__(self, cost_ns: int, warmup_cost_ns: int | None = None, warmup: int = 0):
        self.now = 0
        self.calls = 0
        self.cost_ns = cost_ns
        self.warmup_cost_ns = cost_ns if warmup_cost_ns is None else warmup_cost_ns
        self.warmup = warmup
        self.gc_during_calls: list[bool] = []

    def clock(self) -> int:
        return self.now

    def run(self) -> None:
        self.calls += 1
        self.now += self.warmup_cost_ns if self.calls <= self.warmup else self.cost_ns
        self.gc_during_calls.append(gc.isenabled())


def measure(world: FakeWorld, **kw):
    return measure_latency(world.run, timer=world.clock, **kw)


def test_warmup_calls_are_not_in_the_samples():
    # Warm-up calls cost 1 s each, real calls 1 us: any warm-up call inside a sample would show.
    world = FakeWorld(cost_ns=1_000, warmup_cost_ns=1_000_000_000, warmup=7)
    s = measure(world, warmup=7, min_samples=30, min_time_s=0.0, sample_min_s=0.0001)
    assert s.warmup == 7
    assert set(s.samples_ms) == {0.001}  # exactly 1 us per call in every sample
    calibration = s.metadata["harness"]["calibration_calls"]
    # every call is accounted for: warm-up, calibration, then the samples' loops
    assert world.calls == 7 + calibration + len(s.samples_ms) * s.loops


def test_calibration_makes_each_sample_last_sample_min_s():
    # 1 us calls, 100 us minimum: loops go 1 -> 10 -> 100 (x10 at most per step); 100 calls = 100 us
    world = FakeWorld(cost_ns=1_000)
    s = measure(world, warmup=0, min_samples=10, min_time_s=0.0, sample_min_s=0.0001)
    assert s.loops == 100
    assert s.metadata["harness"]["calibration_calls"] == 1 + 10 + 100
    assert all(v * s.loops >= 0.1 for v in s.samples_ms)  # sample duration in ms >= 0.1 ms


@pytest.mark.parametrize("cost_ns", [1, 37, 791, 15_000, 50_000])
def test_calibration_for_various_call_costs(cost_ns):
    world = FakeWorld(cost_ns=cost_ns)
    s = measure(world, warmup=0, min_samples=5, min_time_s=0.0, sample_min_s=20e-6)
    assert s.loops * cost_ns >= 20_000  # every sample lasts >= 20 us
    # and not much longer: the last calibration step at most doubles a run that was too short,
    # or aims at 1.2x the minimum (one call's rounding aside); a slow call runs once per sample
    assert s.loops == 1 or s.loops * cost_ns <= 2 * 20_000 + cost_ns
    assert s.samples_ms == pytest.approx((cost_ns / 1e6,) * len(s.samples_ms))


def test_min_samples_is_respected():
    world = FakeWorld(cost_ns=1_000_000)
    s = measure(world, warmup=0, min_samples=37, min_time_s=0.0, sample_min_s=0.001)
    assert len(s.samples_ms) == 37


def test_min_time_is_respected():
    # 1 ms samples, at least 50 ms of sampling: the 50th sample ends at exactly 50 ms
    world = FakeWorld(cost_ns=1_000_000)
    s = measure(world, warmup=0, min_samples=1, min_time_s=0.05, sample_min_s=0.001)
    assert len(s.samples_ms) == 50


def test_max_time_stops_sampling():
    # 1 ms calls, 2 ms samples, a 0.5 s budget for the whole call (warm-up and calibration count)
    world = FakeWorld(cost_ns=1_000_000)
    s = measure(world, warmup=10, min_samples=10_000, min_time_s=100.0, max_time_s=0.5)
    assert 5 <= len(s.samples_ms) < 10_000
    sample_ns = s.loops * 1_000_000
    assert world.now >= 500_000_000  # it stopped because the budget ran out...
    assert world.now < 500_000_000 + sample_ns  # ...at the first sample boundary after it
    assert s.metadata["harness"]["elapsed_s"] == pytest.approx(world.now / 1e9)


def test_max_time_still_returns_five_samples():
    # each call takes 1 s: the 0.5 s budget is gone during warm-up, yet 5 samples come back
    world = FakeWorld(cost_ns=1_000_000_000)
    s = measure(world, warmup=2, min_samples=25, max_time_s=0.5)
    assert len(s.samples_ms) == 5
    assert s.loops == 1


def test_max_time_floor_never_exceeds_min_samples():
    world = FakeWorld(cost_ns=1_000_000_000)
    s = measure(world, warmup=0, min_samples=3, min_time_s=0.0, max_time_s=0.5)
    assert len(s.samples_ms) == 3


def test_gc_is_paused_only_inside_samples():
    assert gc.isenabled()
    world = FakeWorld(cost_ns=1_000, warmup=3)
    s = measure(world, warmup=3, min_samples=5, min_time_s=0.0, sample_min_s=0.00001)
    n_setup = 3 + s.metadata["harness"]["calibration_calls"]
    assert all(world.gc_during_calls[:n_setup])  # warm-up and calibration: untouched
    assert not any(world.gc_during_calls[n_setup:])  # samples: paused
    assert gc.isenabled()  # and restored
    world = FakeWorld(cost_ns=1_000)
    measure(world, warmup=0, min_samples=5, min_time_s=0.0, disable_gc=False)
    assert all(world.gc_during_calls)


def test_gc_is_restored_when_run_raises():
    world = FakeWorld(cost_ns=1_000)

    def run():
        world.run()
        if not gc.isenabled():
            raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        measure_latency(run, timer=world.clock, warmup=0, min_time_s=0.0)
    assert gc.isenabled()


def test_gc_left_disabled_stays_disabled():
    world = FakeWorld(cost_ns=1_000)
    gc.disable()
    try:
        measure(world, warmup=0, min_samples=5, min_time_s=0.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_metadata_is_kept_and_the_result_serialises():
    world = FakeWorld(cost_ns=10_000)
    s = measure(world, warmup=1, min_samples=5, min_time_s=0.0, metadata={"runtime": "ort_cpu"})
    assert s.metadata["runtime"] == "ort_cpu"
    harness = s.metadata["harness"]
    assert harness["gc_disabled"] is True and harness["sample_min_s"] == 0.002
    assert "python" in harness and "cpu_count" in harness
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()


def test_throughput_from_the_median():
    # a batch of 32 takes 2 ms: 16,000 items/s, and the CI collapses onto it
    world = FakeWorld(cost_ns=2_000_000)
    t = measure_throughput(
        world.run, batch_size=32, timer=world.clock, warmup=0, min_samples=10, min_time_s=0.0
    )
    assert t["batch_size"] == 32
    assert t["items_per_s"] == pytest.approx(16_000)
    assert t["items_per_s_low"] == pytest.approx(16_000) == t["items_per_s_high"]
    assert t["batch_p50_ms"] == pytest.approx(2.0)
    assert len(t["samples"]["samples_ms"]) == 10
    json.dumps(t)


def test_real_clock_smoke():
    # the real timer, a trivial function, a tiny budget: only that it works, not how fast
    s = measure_latency(lambda: None, warmup=2, min_samples=5, min_time_s=0.0, sample_min_s=1e-4)
    assert len(s.samples_ms) >= 5 and s.loops >= 1
    assert all(math.isfinite(v) and v > 0 for v in s.samples_ms)


@pytest.mark.parametrize(
    "kw",
    [
        {"warmup": -1},
        {"min_samples": 0},
        {"min_time_s": -1.0},
        {"max_time_s": 0.0},
        {"sample_min_s": 0.0},
    ],
)
def test_rejects_bad_parameters(kw):
    with pytest.raises(BadInputError):
        measure_latency(lambda: None, **kw)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_throughput_rejects_bad_batch_size(batch_size):
    with pytest.raises(BadInputError):
        measure_throughput(lambda: None, batch_size=batch_size)


def test_interleaved_samples_take_turns_and_share_the_machine():
    """Two callables on one clock, the machine slowing down 3x half way: each gets its own
    warm-up and calibration, then one sample each in ABBA turns, until both have min_samples and
    min_time; both see the slow half, so their ratio stays the true one."""
    from edgekd.bench.harness import measure_interleaved

    now = [0]
    order: list[str] = []

    def clock() -> int:
        return now[0]

    def make(name: str, cost: int):
        def run() -> None:
            order.append(name)
            now[0] += cost * (3 if now[0] > 30_000_000 else 1)  # the machine slows down

        return run

    # 2 and 3 ms a call, samples of >= 1 ms: the calibration keeps 1 call a sample
    a, b = measure_interleaved([make("a", 2_000_000), make("b", 3_000_000)], timer=clock,
                               warmup=3, min_samples=8, min_time_s=0.04,
                               sample_min_s=0.001)  # fmt: skip
    assert order[:8] == ["a"] * 4 + ["b"] * 4  # warm-up and one calibration call each
    assert order[8:16] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # ABBA, a sample a turn
    for s, cost in ((a, 2.0), (b, 3.0)):
        assert len(s.samples_ms) >= 8 and s.loops == 1 and s.warmup == 3
        assert s.metadata["harness"]["interleaved_with"] == 1
        assert min(s.samples_ms) == pytest.approx(cost) and max(s.samples_ms) > 2 * cost
    assert sum(a.samples_ms) + sum(b.samples_ms) >= 2 * 40  # 2 x min_time in all
    # samples taken in the same turns: 1.5x apart, slow half or not (one turn may straddle)
    ratios = [y / x for x, y in zip(a.samples_ms, b.samples_ms, strict=False)]
    assert sum(abs(r - 1.5) < 1e-9 for r in ratios) >= len(ratios) - 1
