"""A gate that decides: NOT MEASURED lines, ``--require``, and measuring a regression until decided.

The loop that adds processes is tested with an injected measurement and a fake clock, so these
tests are deterministic and take no real time; one test runs a real extra process of a tiny ONNX
model, to prove the file checks and the worker behind the loop.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gate import TARGET, model, report, runs, verdicts
from typer.testing import CliRunner

from edgekd.bench.digest import file_sha256
from edgekd.bench.stats import LatencySamples
from edgekd.cli import app
from edgekd.gate import gate
from edgekd.gate.checks import Verdict
from edgekd.gate.remeasure import close_side, side_of

runner = CliRunner()

HERE = "cpu-A"  # test_gate.report's default host.cpu_model: the reports here are measured "here"


@pytest.fixture(autouse=True)
def this_host_is_cpu_a(monkeypatch):
    """This host's CPU is the reports' (``cpu-A``), so they may take more processes; a test that
    wants another CPU's report says ``cpu="cpu-B"``."""
    import edgekd.hostinfo

    real = edgekd.hostinfo.host_info()
    monkeypatch.setattr(edgekd.hostinfo, "host_info", lambda: {**real, "cpu_model": HERE})


@pytest.fixture
def target_path(tmp_path):
    def make(latency_ms: float = 2.0, vs_teacher: float = 0.5) -> str:
        path = tmp_path / f"gatetest-{latency_ms}-{vs_teacher}.toml"
        path.write_text(TARGET.format(latency_ms=latency_ms, vs_teacher=vs_teacher))
        return str(path)

    return make


class FakeClock:
    """Time that moves only when a process is "measured": one second a process."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def process(median: float, n: int = 40) -> LatencySamples:
    """One process's samples: tightly around ``median`` (each process is steady in itself)."""
    return LatencySamples(tuple(median * (1 + 0.002 * np.linspace(-1, 1, n))))


def processes(medians) -> list[LatencySamples]:
    return [process(m) for m in medians]


def fake_more(clock: FakeClock, ratio: float, spread: float = 0.08, seed: int = 0):
    """``more(model, side)``: a new process whose median is drawn around 1 ms (baseline) or
    ``ratio`` ms (current), log-normal with ``spread``; each costs a second of fake time."""
    rng = np.random.default_rng(seed)
    calls: list[str] = []

    def more(m, side: str) -> LatencySamples:
        calls.append(side)
        clock.now += 1.0
        centre = ratio if side == "current" else 1.0
        return process(float(centre * np.exp(rng.normal(0.0, spread))))

    return more, calls


# Three stored processes a side, too far apart to decide a 10% threshold either way.
UNSURE_BASE = [1.0, 1.25, 0.9]
UNSURE_CURRENT = [1.2, 0.95, 1.05]


def _pair(t, base_medians, current_medians):
    base = report(t, model("s", processes(base_medians), accuracy=None))
    current = report(t, model("s", processes(current_medians), accuracy=None))
    return base, current


def test_the_stored_processes_alone_leave_it_undecided(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, UNSURE_CURRENT)
    result = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=0)
    assert verdicts(result) == {"latency_regression": "INCONCLUSIVE"}


def test_an_unchanged_model_is_measured_until_it_passes(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, UNSURE_CURRENT)
    clock = FakeClock()
    more, calls = fake_more(clock, ratio=1.0)
    result = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=60,
                  more=more, clock=clock)  # fmt: skip
    line = result.lines[0]
    assert line.verdict == Verdict.PASS and "decided after" in line.reason
    assert calls and calls.count("current") == calls.count("baseline")  # a process a side a round
    assert clock.now <= 60


def test_a_slower_model_is_measured_until_it_fails(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, [m * 1.5 for m in UNSURE_CURRENT][:1] + [1.0, 1.3])
    clock = FakeClock()
    more, calls = fake_more(clock, ratio=1.5)
    result = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=60,
                  more=more, clock=clock)  # fmt: skip
    assert result.lines[0].verdict == Verdict.FAIL and calls
    assert result.exit_code == 3


def test_measuring_stops_at_max_seconds(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, UNSURE_CURRENT)
    clock = FakeClock()
    # Exactly at the threshold: the interval keeps straddling it however long we measure.
    more, calls = fake_more(clock, ratio=1.1, spread=0.15)
    result = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=10,
                  more=more, clock=clock)  # fmt: skip
    line = result.lines[0]
    assert line.verdict == Verdict.INCONCLUSIVE and "still undecided" in line.reason
    assert "--max-seconds 10" in line.reason
    # Rounds start at 0, 2, 4, 6 and 8 s (two processes each); the next would end past 10 s.
    assert len(calls) == 10 and clock.now == 10


def test_the_latency_budget_line_is_measured_until_decided(target_path):
    t = target_path(latency_ms=2.0)
    # One stored process of 40 samples: too few to bound a p95 (72 needed).
    rep = report(t, model("s", processes([1.0]), accuracy=None))
    assert verdicts(gate(rep, t))["latency_ms"] == "INCONCLUSIVE"
    clock = FakeClock()
    more, calls = fake_more(clock, ratio=1.0)
    line = gate(rep, t, max_seconds=60, more=more, clock=clock).lines[0]
    assert line.name == "latency_ms" and line.verdict == Verdict.PASS
    assert calls and set(calls) == {"current"} and "decided after" in line.reason


def test_max_seconds_zero_never_measures(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, UNSURE_CURRENT)
    more, calls = fake_more(FakeClock(), ratio=1.0)
    gate(current, t, baseline=base, max_seconds=0, more=more)
    assert calls == []


def test_a_model_file_that_is_gone_is_not_measured_again(target_path):
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, UNSURE_CURRENT)  # their paths name no file here
    line = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=60).lines[0]
    assert line.verdict == Verdict.INCONCLUSIVE and "not measured again" in line.reason
    assert "measured on CPU" not in line.reason  # refused for its file, not for its CPU


def test_one_more_real_process_of_an_unchanged_onnx_file(tmp_path, target_path):
    from test_bench import _mlp

    path = _mlp(tmp_path / "m.onnx")
    t = target_path()
    rep = report(t, model("m", processes([1.0]), path=path, sha256=file_sha256(path)))
    rep.bench.update(min_time_s=0.01, min_samples=10, processes=1)
    side = side_of(rep.models[0], rep, str(tmp_path / "report.json"), [])
    assert side.more is not None
    try:
        got = side.more()
    finally:
        close_side(side)
    assert len(got.samples_ms) >= 10 and min(got.samples_ms) > 0
    # A file changed since it was measured is never timed under the old name.
    changed = report(t, model("m", processes([1.0]), path=path, sha256="0" * 64))
    side = side_of(changed.models[0], changed, "", [])
    assert side.more is None and "changed" in side.why_not


# ----------------------------------------------------------- a report measured on another CPU


def test_a_report_from_another_cpu_takes_no_processes_from_this_host(target_path):
    """Its stored processes and this host's pooled would describe neither machine: the budget
    line keeps the stored ones and says why; the same report measured here is measured again, as
    is one that records no CPU."""
    t = target_path(latency_ms=2.0)
    for cpu, measured_again in (("cpu-B", False), (HERE, True), (None, True)):
        rep = report(t, model("s", processes([1.0]), accuracy=None), cpu=cpu)
        clock = FakeClock()
        more, calls = fake_more(clock, ratio=1.0)
        line = gate(rep, t, max_seconds=60, more=more, clock=clock).lines[0]
        assert line.name == "latency_ms"
        assert bool(calls) == measured_again, (cpu, line.reason)
        if not measured_again:
            assert line.verdict == Verdict.INCONCLUSIVE
            assert "not measured again" in line.reason
            assert "measured on CPU 'cpu-B', not on this host's 'cpu-A'" in line.reason


def test_only_the_side_measured_here_takes_processes(tmp_path, target_path):
    """``--any-host`` compares a report with a baseline from another CPU, each on its own
    processes: the current side (this host's CPU) takes more, the baseline's none."""
    t = target_path()
    base = report(t, model("s", processes(UNSURE_BASE), accuracy=None), cpu="cpu-B")
    current = report(t, model("s", processes(UNSURE_CURRENT), accuracy=None))
    clock = FakeClock()
    more, calls = fake_more(clock, ratio=1.0)
    line = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=60,
                any_host=True, more=more, clock=clock).lines[0]  # fmt: skip
    assert calls and set(calls) == {"current"}, line.reason
    assert "of the model's" in line.reason and "of the baseline's" not in line.reason
    assert "measured on CPU 'cpu-B', not on this host's 'cpu-A'" in line.reason
    # Both reports from the same other CPU: compared on their stored processes, each file named.
    for name, medians in (("base", UNSURE_BASE), ("current", UNSURE_CURRENT)):
        rep = report(t, model("s", processes(medians), accuracy=None), cpu="cpu-B")
        (tmp_path / f"{name}.json").write_text(rep.to_json())
    clock = FakeClock()
    more, calls = fake_more(clock, ratio=1.0)
    line = gate(tmp_path / "current.json", t, baseline=tmp_path / "base.json",
                only=["latency_regression"], max_seconds=60, more=more, clock=clock).lines[0]
    assert calls == [] and line.verdict == Verdict.INCONCLUSIVE
    assert "not measured again" in line.reason
    for name in ("current", "base"):
        assert f"{tmp_path / name}.json was measured on CPU 'cpu-B', not on this host's " \
            "'cpu-A'" in line.reason  # fmt: skip


def test_no_worker_is_prepared_for_another_cpus_report(tmp_path, target_path):
    """The real path: a file that ``model_file`` accepts (the bytes hash to the report's sha256;
    nothing opens it until a round runs) gets a side and a pair only from this host's CPU."""
    from edgekd.gate.remeasure import pair_of

    path = tmp_path / "m.onnx"
    path.write_bytes(b"not opened until a round runs")
    t = target_path()

    def rep(cpu: str):
        return report(t, model("m", processes([1.0]), path=str(path), sha256=file_sha256(path)),
                      cpu=cpu)  # fmt: skip

    here, there = rep(HERE), rep("cpu-B")
    assert side_of(here.models[0], here, "here.json", []).more is not None
    side = side_of(there.models[0], there, "there.json", [])
    assert side.more is None
    assert side.why_not == ("there.json was measured on CPU 'cpu-B', not on this host's 'cpu-A', "
                            "so none were added to it")  # fmt: skip
    assert pair_of(here.models[0], here, "", here.models[0], here, "")[0] is not None
    for a, b in ((here, there), (there, here)):
        assert pair_of(a.models[0], a, "", b.models[0], b, "")[0] is None


# ------------------------------------------------------------------ NOT MEASURED and --require


@pytest.fixture
def no_teacher(tmp_path, target_path):
    t = target_path()
    path = tmp_path / "report.json"
    path.write_text(report(t, model("s", runs("base", "base_rerun"), accuracy=None)).to_json())
    return t, path


def test_an_unmeasured_line_does_not_make_the_gate_inconclusive(no_teacher):
    t, path = no_teacher
    result = runner.invoke(app, ["gate", str(path), "--target", t])
    assert result.exit_code == 0, result.output
    assert "NOT MEASURED" in result.output and "gate: PASS" in result.output
    # JUnit: skipped, with why; Markdown: counted apart.
    from edgekd.gate import to_junit, to_markdown

    res = gate(path, t)
    assert 'message="NOT MEASURED: needs labelled --data' in to_junit(res)
    assert "not measured" in to_markdown(res)


def test_require_makes_an_unmeasured_line_count(no_teacher):
    t, path = no_teacher
    result = runner.invoke(app, ["gate", str(path), "--target", t, "--require", "accuracy_drop"])
    assert result.exit_code == 4, result.output
    line = next(g for g in gate(path, t, require=["accuracy_drop"]).lines
                if g.name == "accuracy_drop")  # fmt: skip
    assert line.verdict == Verdict.INCONCLUSIVE and "required" in line.reason


def test_require_names_a_known_line(no_teacher):
    t, path = no_teacher
    result = runner.invoke(app, ["gate", str(path), "--target", t, "--require", "speed"])
    assert result.exit_code == 2 and "unknown gate line 'speed'" in result.output


# --------------------------------------------------------------------- the rank interval


def test_rank_interval_matches_a_hand_count():
    """Logs 1..8 against 11..18 (a shift of 10): the 64 differences are 10 + (i - j), so by
    hand the 98% bounds (C = floor(32 - 2.326 sqrt(64 * 17 / 12)) = 9) are D(9) = 6 and
    D(56) = 14, and the estimate is 10."""
    import math

    from edgekd.gate.compare import _hodges_lehmann

    b = np.exp(np.arange(1.0, 9.0))
    ratio, lo, hi, p = _hodges_lehmann(b, b * math.exp(10.0), 0.98)
    assert [round(math.log(v), 9) for v in (ratio, lo, hi)] == [10.0, 6.0, 14.0]
    assert p < 1e-3  # every one of the 64 pairs has the current side slower


def test_a_few_slow_processes_do_not_hide_an_unchanged_model():
    """On a busy host a quarter of processes ran 1.5x slower, on both sides alike: from 12
    processes a side the rank interval rules a 10% regression out, where a t interval on the
    same medians still reaches past it."""
    from edgekd.bench.stats import process_medians
    from edgekd.gate.compare import _welch, compare_processes

    steady = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    base = processes([m * (1.5 if i % 4 == 0 else 1.0) for i, m in enumerate(steady)])
    cur = processes([m * (1.5 if i % 4 == 1 else 1.0) for i, m in enumerate(reversed(steady))])
    c = compare_processes(base, cur, threshold=0.10)
    assert c.verdict == Verdict.PASS and "from ranks" in c.reason and c.ci_high <= 1.1
    assert _welch(process_medians(base), process_medians(cur), 0.98)[2] > 1.1


def test_signed_rank_interval_matches_a_hand_count():
    """Log ratios 1..8: the 36 Walsh averages run 1, 1.5, ..., 7.5, 8; with 8 pairs the exact
    signed-rank null gives P(W+ <= 1) = 2/256 <= 0.01 < P(W+ <= 2) = 3/256, so C = 2 and the
    98% bounds are the second smallest (1.5) and second largest (7.5) averages; the estimate is
    their median, 4.5; all eight positive: p = 1/256."""
    import math

    from edgekd.gate.compare import _signed_rank

    ratio, lo, hi, p = _signed_rank(np.arange(1.0, 9.0), 0.98)
    assert [round(math.log(v), 9) for v in (ratio, lo, hi)] == [4.5, 1.5, 7.5]
    assert p == pytest.approx(1 / 256)


def drifting_more(clock: FakeClock, ratio: float, drift: float = 0.3, seed: int = 1):
    """``more(model, side)`` on a machine whose load moves a lot between rounds (log-normal
    ``drift`` shared by the two processes of a round) and little within one (1%)."""
    rng = np.random.default_rng(seed)
    calls: list[str] = []
    factor = [1.0]

    def more(m, side: str) -> LatencySamples:
        if len(calls) % 2 == 0:  # a new round: the machine has moved
            factor[0] = float(np.exp(rng.normal(0.0, drift)))
        calls.append(side)
        clock.now += 1.0
        centre = (ratio if side == "current" else 1.0) * factor[0]
        return process(float(centre * np.exp(rng.normal(0.0, 0.01))))

    return more, calls


@pytest.mark.parametrize(
    ("ratio", "threshold", "expected"),
    [(1.0, 0.10, "PASS"), (1.5, 0.10, "FAIL"), (1.1, 0.05, "FAIL")],
)
def test_drift_between_rounds_cancels_in_pairs(target_path, ratio, threshold, expected):
    """A machine drifting +-30% between rounds keeps two independent sets of processes apart by
    as much as the models; paired rounds decide: an unchanged model passes, 1.5x fails, and a
    real 1.1x change at a 5% threshold is still found."""
    t = target_path()
    base, current = _pair(t, UNSURE_BASE, [m * ratio for m in UNSURE_CURRENT])
    clock = FakeClock()
    more, calls = drifting_more(clock, ratio)
    result = gate(current, t, baseline=base, only=["latency_regression"], max_seconds=60,
                  threshold=threshold, more=more, clock=clock)  # fmt: skip
    line = result.lines[0]
    assert str(line.verdict) == expected, line.reason
    assert calls.count("current") == calls.count("baseline")
    if ratio != 1.5:  # 1.5x may be plain enough without pairs
        assert "paired over" in line.reason


def test_too_few_pairs_decide_nothing():
    from edgekd.gate.compare import MIN_PAIRS, compare_pairs

    one = (process(1.5), process(1.0))
    assert compare_pairs([one] * (MIN_PAIRS - 1)).verdict == Verdict.INCONCLUSIVE
    assert compare_pairs([one] * MIN_PAIRS).verdict == Verdict.FAIL
    same = (process(1.0), process(1.0))
    assert compare_pairs([same] * MIN_PAIRS).verdict == Verdict.PASS


def test_a_real_paired_process_times_both_models_in_turns(tmp_path, target_path):
    """The gate's paired round: one worker process, both ONNX files open, timed in turns; the
    remeasure loop keeps its two results as a pair."""
    from test_bench import _mlp

    from edgekd.gate.remeasure import Side, measure_until_decided, pair_of

    small = _mlp(tmp_path / "small.onnx")
    (tmp_path / "big").mkdir()
    big = _mlp(tmp_path / "big" / "small.onnx", sizes=(16, 256, 256, 10))
    t = target_path()
    cur = report(t, model("small", processes([1.0]), path=big, sha256=file_sha256(big)))
    old = report(t, model("small", processes([1.0]), path=small, sha256=file_sha256(small)))
    cur.bench.update(min_time_s=0.02, min_samples=16, processes=1)
    pair, closers = pair_of(cur.models[0], cur, "", old.models[0], old, "")
    assert pair is not None
    seen = []

    def decide(c, b, pairs=()):
        seen.append(len(pairs))
        return verdict_line(Verdict.INCONCLUSIVE if len(pairs) < 1 else Verdict.FAIL)

    try:
        line = measure_until_decided(decide, Side([], lambda: 1 / 0), Side([], lambda: 1 / 0),
                                     max_seconds=600, pair=pair)  # fmt: skip
    finally:
        for close in closers:
            close()
    assert line.verdict == Verdict.FAIL and seen == [0, 1]
    assert "1 more process(es) of the baseline's and 1 more process(es) of the model's" in (
        line.reason
    )


def verdict_line(v: Verdict):
    from edgekd.gate.lines import GateLine

    return GateLine("latency_regression", None, 1.1, "x", model="small", verdict=v,
                    kind="regression", reason="r")  # fmt: skip
