"""`edgekd gate`: verdicts on stored sample sets, exit codes, JUnit XML and Markdown (no timing)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.bench.contention import clean_runs
from edgekd.bench.stats import LatencySamples
from edgekd.cli import app
from edgekd.gate import LINE_NAMES, gate, to_junit, to_markdown
from edgekd.gate.checks import Verdict
from edgekd.gate.compare import check_ratio, compare_processes
from edgekd.results import ModelResult, Report
from edgekd.targets import load_target

FIXTURES = Path(__file__).parent / "fixtures"
SETS = {
    k: v["samples_ms"] for k, v in json.loads((FIXTURES / "latency_sets.json").read_text()).items()
}
runner = CliRunner()

TARGET = """
name = "gatetest"
description = "gate tests"
threads = 1
batch_size = 1
precisions = ["fp32"]
opset = 17
providers = ["CPUExecutionProvider"]

[device]
name = "test device"
fp32_gflops = 10.0
int8_gops = 10.0
memory_bandwidth_gbs = 10.0
op_overhead_us = 1.0
call_overhead_us = 1.0

[budget]
latency_ms = {latency_ms}
peak_memory_mb = 100.0
model_size_kb = 100.0
params = 10000
accuracy_drop = 0.02
latency_vs_teacher = {vs_teacher}
"""


@pytest.fixture
def target_path(tmp_path):
    def make(latency_ms: float = 2.0, vs_teacher: float = 0.5) -> str:
        path = tmp_path / f"gatetest-{latency_ms}-{vs_teacher}.toml"
        path.write_text(TARGET.format(latency_ms=latency_ms, vs_teacher=vs_teacher))
        return str(path)

    return make


def runs(*names: str, processes: int = 3, share: list[float] | None = None) -> list[LatencySamples]:
    """Stored sets, concatenated and split into ``processes`` runs (optionally with CPU shares)."""
    values = [v for n in names for v in SETS[n]]
    out = []
    for chunk in np.array_split(np.array(values), processes):
        meta = {} if share is None else {"harness": {"cpu_share": [share[0]] * len(chunk)}}
        out.append(LatencySamples(tuple(chunk), metadata=meta))
    return out


def model(name: str, rs: list[LatencySamples], role: str = "student", **kw) -> ModelResult:
    pooled = [v for r in rs for v in r.samples_ms]
    fields = dict(
        name=name,
        path=f"{name}.onnx",
        format="onnx",
        precision="fp32",
        provider="CPUExecutionProvider",
        params=5000,
        size_bytes=50 * 1024,
        latency_ms=LatencySamples(tuple(pooled)).summary().to_dict(),
        peak_rss_mb=60.0,
        accuracy=0.95,
        agreement_with_teacher=None,
        role=role,
        runtime="ort_cpu",
        latency_samples_ms=pooled,
        latency_processes=[r.to_dict() for r in rs],
        threads=1,
        batch_size=1,
    )
    return ModelResult(**{**fields, **kw})


def report(target: str, *models: ModelResult, cpu: str = "cpu-A", **kw) -> Report:
    return Report(
        target=load_target(target).to_dict(),
        host={"cpu_model": cpu},
        models=list(models),
        data={"test_fingerprint": "abc"},
        **kw,
    )


def verdicts(result) -> dict[str, str]:
    return {line.name: str(line.verdict) for line in result.lines}


# ----------------------------------------------------------------------- process-level verdicts


@pytest.mark.parametrize(
    ("base", "current", "expected"),
    [
        ("base", "base_rerun", Verdict.PASS),  # identical distribution
        ("base", "slower_1_05x", Verdict.PASS),  # significant, but below the 10% threshold
        ("base", "faster_2x", Verdict.PASS),
        ("base", "slower_3x", Verdict.FAIL),
        ("noisy_base", "noisy_3x", Verdict.FAIL),  # noisy, but the CI clears the threshold
        ("noisy_base", "noisy_1_3x", Verdict.INCONCLUSIVE),
        ("wild_a", "wild_b", Verdict.INCONCLUSIVE),
    ],
)
def test_regression_verdicts_on_stored_sets(base, current, expected):
    assert compare_processes(runs(base), runs(current)).verdict == expected


def test_regression_needs_two_processes_a_side_and_enough_samples():
    one = compare_processes(runs("base", processes=1), runs("slower_3x", processes=1))
    assert one.verdict == Verdict.INCONCLUSIVE and "processes" in one.reason
    few = [LatencySamples((1.0, 1.1, 1.2))] * 2
    assert compare_processes(few, few).verdict == Verdict.INCONCLUSIVE


@pytest.mark.parametrize("name", ["wild_a", "noisy_base"])
def test_few_or_wild_samples_are_never_pass_against_a_slower_run(name):
    # Every subset of a noisy set against a 1.3x slower one: never a PASS.
    for k in (2, 3):
        c = compare_processes(runs(name, processes=k), runs("noisy_1_3x", processes=k))
        assert c.verdict != Verdict.PASS, c.reason


def test_relative_budget_from_process_medians():
    student, teacher = runs("base"), runs("slower_3x")  # ratio 1/3
    assert check_ratio(student, teacher, 0.5).verdict == Verdict.PASS
    assert check_ratio(student, teacher, 0.2).verdict == Verdict.FAIL
    assert check_ratio(runs("wild_a"), runs("wild_b"), 1.0).verdict == Verdict.INCONCLUSIVE


def test_contended_processes_are_set_aside():
    quiet, busy = runs("base", share=[1.0]), runs("slower_3x", share=[0.4])
    c = clean_runs(quiet[:2] + busy[:1])
    assert (len(c.runs), c.contended, c.descheduled) == (2, 1, len(busy[0].samples_ms))
    assert "descheduled" in c.note()


# ------------------------------------------------------------------------------ gate lines


def test_every_budget_line_is_checked(target_path):
    t = target_path()
    rep = report(
        t,
        model("teacher", runs("slower_3x", "slower_3x"), role="teacher", accuracy=0.96),
        model("student", runs("base", "base_rerun"), accuracy=0.95),
    )
    result = gate(rep, t)
    v = verdicts(result)
    assert set(v) == {
        "latency_ms",
        "latency_vs_teacher",
        "peak_memory_mb",
        "model_size_kb",
        "params",
        "accuracy_drop",
    }
    assert set(v.values()) == {"PASS"}, [line.reason for line in result.lines]
    assert result.verdict == Verdict.PASS and result.exit_code == 0
    # The gate's lines become the report's budget lines (passed=None for INCONCLUSIVE).
    assert all(line.to_budget_line().passed is True for line in result.lines)


def test_absolute_latency_pass_fail_and_inconclusive(target_path):
    rep = report(target_path(), model("s", runs("base", "base_rerun")))  # p95 ~1.03 ms, n=120
    assert verdicts(gate(rep, target_path(latency_ms=2.0)))["latency_ms"] == "PASS"
    assert verdicts(gate(rep, target_path(latency_ms=0.5)))["latency_ms"] == "FAIL"
    few = report(target_path(), model("s", runs("base")))  # n=60 < 72: no p95 upper bound
    assert verdicts(gate(few, target_path(latency_ms=2.0)))["latency_ms"] == "INCONCLUSIVE"


def test_a_saturated_host_cannot_fail_a_model(target_path):
    # Three times over budget, but every process held its CPU only 40% of the time.
    busy = report(target_path(), model("s", runs("slower_3x", "slower_3x", share=[0.4])))
    line = gate(busy, target_path(latency_ms=2.0)).lines[0]
    assert line.verdict == Verdict.INCONCLUSIVE and "too busy" in line.reason
    # The same figures from a quiet host are a real failure.
    quiet = report(target_path(), model("s", runs("slower_3x", "slower_3x", share=[1.0])))
    assert gate(quiet, target_path(latency_ms=2.0)).lines[0].verdict == Verdict.FAIL


def test_missing_teacher_or_labels_is_not_measured_never_pass(target_path):
    rep = report(target_path(), model("s", runs("base", "base_rerun"), accuracy=None))
    result = gate(rep, target_path())
    v = verdicts(result)
    assert v["accuracy_drop"] == v["latency_vs_teacher"] == "NOT MEASURED"
    line = next(g for g in result.lines if g.name == "accuracy_drop")
    assert line.passed is None and "--teacher" in line.reason
    # Not measured does not decide the verdict; the measured lines do.
    assert result.verdict == Verdict.PASS and result.exit_code == 0
    only = gate(rep, target_path(), only=["latency_ms", "params"])
    assert set(verdicts(only)) == {"latency_ms", "params"} and only.verdict == Verdict.PASS
    assert any("not checked" in n for n in only.notes)


def test_device_estimate_is_labelled_an_estimate(target_path):
    m = model("s", runs("base", "base_rerun"))
    object.__setattr__(m, "latency_estimate_ms", 3.0)  # the sizing helper's field, if present
    line = next(
        g for g in gate(report(target_path(), m), target_path()).lines if g.kind == "estimate"
    )
    assert line.name == "latency_estimate_ms" and line.verdict == Verdict.FAIL
    assert "ESTIMATE" in line.detail


def test_baseline_regression_lines(target_path):
    t = target_path()
    base = report(t, model("s", runs("base", "base_rerun"), accuracy=0.95))
    same = report(t, model("s", runs("base_rerun", "base"), accuracy=0.945))
    slower = report(t, model("s", runs("slower_3x", "slower_3x"), accuracy=0.90))
    v = verdicts(gate(same, t, baseline=base, only=["latency_regression", "accuracy_regression"]))
    assert v == {"latency_regression": "PASS", "accuracy_regression": "PASS"}
    v = verdicts(gate(slower, t, baseline=base))
    assert v["latency_regression"] == "FAIL" and v["accuracy_regression"] == "FAIL"
    # Another CPU: not comparable unless asked.
    other = report(t, model("s", runs("base_rerun", "base")), cpu="cpu-B")
    assert verdicts(gate(other, t, baseline=base))["latency_regression"] == "INCONCLUSIVE"
    assert verdicts(gate(other, t, baseline=base, any_host=True))["latency_regression"] == "PASS"


# ------------------------------------------------------------------------ CLI and outputs


@pytest.fixture
def reports(tmp_path, target_path):
    t = target_path()
    teacher = model("teacher", runs("slower_3x", "slower_3x"), role="teacher", accuracy=0.96)
    good = report(t, teacher, model("student", runs("base", "base_rerun")))
    big = report(t, teacher, model("student", runs("base", "base_rerun"), params=10**6))
    unsure = report(t, teacher, model("student", runs("wild_a", "wild_b")))
    paths = {}
    for name, rep in (("good", good), ("big", big), ("unsure", unsure)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(rep.to_json())
    return t, paths


@pytest.mark.parametrize(("which", "code"), [("good", 0), ("big", 3), ("unsure", 4)])
def test_exit_codes(reports, which, code):
    t, paths = reports
    result = runner.invoke(app, ["gate", str(paths[which]), "--target", t])
    assert result.exit_code == code, result.output
    assert f"gate: {['PASS', 'FAIL', 'INCONCLUSIVE'][[0, 3, 4].index(code)]}" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.json"], "report not found"),
        (["{good}", "--model", "nobody"], "no model named 'nobody'"),
        (["{good}", "--only", "speed"], "unknown gate line 'speed'"),
        (["{good}", "--target", "watch"], "unknown target 'watch'"),
        (["{bad}"], "not valid JSON"),
    ],
)
def test_bad_input_exits_2_with_one_line(reports, tmp_path, args, needle):
    _, paths = reports
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.format(good=paths["good"], bad=tmp_path / "bad.json") for a in args]
    result = runner.invoke(app, ["gate", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1


def test_internal_error_exits_1(reports, monkeypatch):
    gate_module = importlib.import_module("edgekd.gate")  # edgekd.gate is the verb

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(gate_module, "gate", broken)
    _, paths = reports
    result = runner.invoke(app, ["gate", str(paths["good"])])
    assert result.exit_code == 1 and "internal error" in result.output


def test_junit_markdown_and_json_outputs(reports, tmp_path):
    t, paths = reports
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    result = runner.invoke(
        app, ["gate", str(paths["big"]), "--target", t, "--junit", str(junit),
              "--markdown", str(md), "--json"],
    )  # fmt: skip
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["verdict"] == "FAIL" and data["exit_code"] == 3
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(data["lines"])
    assert {c.get("name") for c in cases} <= set(LINE_NAMES)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["params"]
    assert int(root.get("failures")) == 1 and int(root.get("tests")) == len(cases)
    text = md.read_text()
    assert text.startswith("### edgekd gate: **FAIL**")
    assert "| params | student | absolute | 1,000,000 | 10,000 | **FAIL** |" in text


def test_inconclusive_lines_are_skipped_testcases(reports, target_path):
    t, paths = reports
    result = gate(paths["unsure"], t)
    root = ET.fromstring(to_junit(result))
    skipped = [c for c in root.iter("testcase") if c.find("skipped") is not None]
    assert len(skipped) == result.counts()["INCONCLUSIVE"] > 0
    assert "INCONCLUSIVE" in to_markdown(result)


def test_gate_reads_the_report_target_by_default(reports):
    _, paths = reports
    rep = json.loads(paths["good"].read_text())
    assert gate(paths["good"]).target == rep["target"]["name"]


def test_a_stored_report_keeps_its_budget_when_the_toml_changes(tmp_path, target_path):
    t = target_path(latency_ms=2.0)
    teacher = model("teacher", runs("slower_3x", "slower_3x"), role="teacher", accuracy=0.96)
    path = tmp_path / "report.json"
    path.write_text(report(t, teacher, model("student", runs("base", "base_rerun"))).to_json())
    Path(t).write_text(TARGET.format(latency_ms=0.001, vs_teacher=0.5))  # edited after the run

    result = gate(path)  # the stored profile: 2 ms, as measured
    line = next(g for g in result.lines if g.name == "latency_ms")
    assert (line.limit, str(line.verdict)) == (2.0, "PASS")
    assert any("has changed" in n and "budget.latency_ms 2.0 -> 0.001" in n for n in result.notes)
    out = runner.invoke(app, ["gate", str(path)])
    shown = " ".join(out.output.split())  # the terminal table wraps long notes
    assert out.exit_code == 0 and "has changed since the report was measured" in shown

    result = gate(path, t)  # an explicit target overrides, and says so
    line = next(g for g in result.lines if g.name == "latency_ms")
    assert (line.limit, str(line.verdict)) == (0.001, "FAIL")
    assert any("overrides the profile stored" in n for n in result.notes)
    out = runner.invoke(app, ["gate", str(path), "--target", t])
    assert out.exit_code == 3
    assert "overrides the profile stored in the report" in " ".join(out.output.split())


def test_budget_lines_wrapper_matches_the_gate(target_path):
    from edgekd.gate import budget_lines

    t = load_target(target_path())
    student = model("s", runs("base", "base_rerun"))
    teacher = dataclasses.replace(model("t", runs("slower_3x", "slower_3x")), accuracy=0.96)
    lines = budget_lines(t, student, teacher)
    assert {b.name for b in lines} >= {"latency_ms", "params", "accuracy_drop"}
    assert all(b.passed for b in lines)


def test_a_baseline_taken_on_a_saturated_host_cannot_flag_a_regression(target_path):
    t = target_path()
    # Baseline: two of three processes held their CPU 40% of the time (and so look 3x slower).
    busy = runs("slower_3x", share=[0.4])[:2] + runs("base", share=[1.0])[:1]
    baseline = report(t, model("s", busy))
    current = report(t, model("s", runs("base_rerun", share=[1.0])))
    line = next(g for g in gate(current, t, baseline=baseline).lines if g.kind == "regression")
    assert line.verdict == Verdict.INCONCLUSIVE and "baseline run" in line.reason
