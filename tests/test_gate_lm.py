"""``edgekd gate`` on a causal-LM report: its [lm] lines (latency by the interval of the stored
per-run samples, as the classifier's ``latency_ms``), NOT MEASURED, --require, --only, regressions
against a baseline LM report (``--baseline``), and undecided latency lines measured again
(``--max-seconds``: the time probe replaced by hand-made samples; no real timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.bench.stats import LatencySamples
from edgekd.cli import app
from edgekd.gate import Verdict, gate

runner = CliRunner()
MIB = 2**20
LIMITS = {"decode_ms_per_token": 50.0, "ttft_ms": 200.0, "prompt_tokens": 32,
          "context_tokens": 128, "memory_mb": 100.0, "model_size_mb": 10.0,
          "perplexity_increase": 0.3}  # fmt: skip


def steady(median_ms, runs=4, n=25):
    """``runs`` per-run samples of ``n`` evenly spread within 1% around ``median_ms``: 100 in
    all, enough to bound a p95 (72)."""
    return [LatencySamples(tuple(median_ms * (1 + (i - n // 2) / (100 * n)) for i in range(n)),
                           metadata={"unit": "process", "process": r + 1}).to_dict()
            for r in range(runs)]  # fmt: skip


def lm_report(tmp_path, ttft=150.0, memory=None, limits=None):
    student = {"name": "student", "size_bytes": 5 * MIB, "perplexity": 60.0,
               "decode_p95_ms": 40.0, "ttft_p95_ms": ttft, "peak_memory_mb": memory,
               "decode_runs": steady(40.0), "ttft_runs": steady(ttft)}  # fmt: skip
    data = {
        "task": "causal-lm", "target": "mobile", "target_lm": limits or LIMITS,
        "models": [{"name": "teacher", "perplexity": 50.0}, student],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_lines_by_hand(tmp_path):
    result = gate(lm_report(tmp_path, ttft=250.0))
    by_name = {line.name: line for line in result.lines}
    # samples within 1% of 40 ms: under 50; of 250 ms: over 200; memory not measured;
    # 5 <= 10 MB; 60/50 - 1 = 0.2 <= 0.3
    assert by_name["decode_ms_per_token"].verdict == Verdict.PASS
    assert by_name["ttft_ms"].verdict == Verdict.FAIL
    assert by_name["memory_mb"].verdict == Verdict.NOT_MEASURED
    assert by_name["model_size_mb"].value == pytest.approx(5.0)
    assert by_name["perplexity_increase"].value == pytest.approx(0.2)
    assert by_name["perplexity_increase"].verdict == Verdict.PASS
    assert result.verdict == Verdict.FAIL and result.exit_code == 3


def test_unset_lines_are_skipped_and_required_ones_count(tmp_path):
    path = lm_report(tmp_path, limits={**LIMITS, "ttft_ms": 0.0})
    result = gate(path)
    assert "ttft_ms" not in {line.name for line in result.lines}
    assert result.verdict == Verdict.PASS  # memory is NOT MEASURED and not required
    required = gate(path, require=["memory_mb"])
    assert required.verdict == Verdict.INCONCLUSIVE and required.exit_code == 4
    only = gate(path, only=["decode_ms_per_token"])
    assert [line.name for line in only.lines] == ["decode_ms_per_token"]


def test_cli_exit_codes_and_refusals(tmp_path):
    path = lm_report(tmp_path, ttft=250.0)
    result = runner.invoke(app, ["gate", str(path)])
    assert result.exit_code == 3 and "ttft_ms" in result.output
    result = runner.invoke(app, ["gate", str(path), "--target", "mobile", "--json"])
    assert result.exit_code in (0, 3, 4), result.output
    for args, message in (
        (["--require", "accuracy_drop"], "unknown line 'accuracy_drop'"),
    ):
        result = runner.invoke(app, ["gate", str(path), *args])
        assert result.exit_code == 2 and message in result.output
    bad = lm_report(tmp_path, limits={**LIMITS, "ttft_ms": -1.0})
    result = runner.invoke(app, ["gate", str(bad)])
    assert result.exit_code == 2 and "target_lm.ttft_ms" in result.output


# --- against a baseline LM report ----------------------------------------------------------------

def repeats(median_ms, scales=(1.0, 1.01, 0.99), n=24):
    """Per-run samples as the LM bench stores an ONNX model's (a fresh process per run): each
    run ``n`` samples within 2.4% around ``median_ms`` times its scale (3 x 24 = 72: enough to
    bound the budget lines' p95)."""
    return [LatencySamples(tuple(median_ms * s * (1 + (i - n // 2) / 500) for i in range(n)),
                           metadata={"unit": "process", "process": r}).to_dict()
            for r, s in enumerate(scales, 1)]  # fmt: skip


def with_runs(tmp_path, name, decode=10.0, ttft=100.0, decode_scales=(1.0, 1.01, 0.99),
              perplexity=60.0, agreement=0.8, size=5 * MIB):
    student = {"name": "student", "format": "onnx", "prompt_tokens": 16, "size_bytes": size,
               "perplexity": perplexity, "top1_agreement": agreement, "decode_p95_ms": 40.0,
               "ttft_p95_ms": 150.0, "peak_memory_mb": 50.0,
               "decode_runs": repeats(decode, decode_scales), "ttft_runs": repeats(ttft)}
    data = {"task": "causal-lm", "target": "mobile", "target_lm": LIMITS,
            "host": {"cpu_model": "test cpu"}, "data": {"test": {"source": "held_out.txt"}},
            "models": [{"name": "teacher", "perplexity": 50.0}, student]}  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def regressions(result):
    return {g.name: g for g in result.lines if g.kind == "regression"}


def test_baseline_pass(tmp_path):
    base = with_runs(tmp_path, "base", perplexity=59.0, agreement=0.805)
    result = gate(with_runs(tmp_path, "current"), baseline=base)
    lines = regressions(result)
    assert {n: g.verdict for n, g in lines.items()} == {
        "decode_regression": Verdict.PASS, "ttft_regression": Verdict.PASS,
        "perplexity_regression": Verdict.PASS, "agreement_regression": Verdict.PASS,
        "size_regression": Verdict.PASS}  # fmt: skip
    assert lines["decode_regression"].value == pytest.approx(1.0)
    assert "a fresh process per run" in lines["decode_regression"].detail
    # by hand: 60 / 59 - 1 = 0.01695 <= 0.02; 0.805 - 0.8 = 0.005 <= 0.01; 5 MiB / 5 MiB = 1
    assert lines["perplexity_regression"].value == pytest.approx(1 / 59)
    assert lines["agreement_regression"].value == pytest.approx(0.005)
    assert lines["size_regression"].value == 1.0
    assert result.verdict == Verdict.PASS and result.baseline == str(base)


def test_baseline_fail(tmp_path):
    base = with_runs(tmp_path, "base")
    current = with_runs(tmp_path, "current", decode=15.0, perplexity=62.0, agreement=0.78,
                        size=6 * MIB)
    lines = regressions(gate(current, baseline=base))
    # decode 1.5x slower, tight repeats: significant; 62 / 60 - 1 = 0.033 > 0.02;
    # 0.8 - 0.78 = 0.02 > 0.01; 6 / 5 = 1.2 > 1.1
    assert lines["decode_regression"].verdict == Verdict.FAIL
    assert lines["decode_regression"].value == pytest.approx(1.5, rel=1e-3)
    assert lines["ttft_regression"].verdict == Verdict.PASS
    assert lines["perplexity_regression"].value == pytest.approx(62 / 60 - 1)
    for name in ("perplexity_regression", "agreement_regression", "size_regression"):
        assert lines[name].verdict == Verdict.FAIL, name
    result = runner.invoke(app, ["gate", str(current), "--baseline", str(base)])
    assert result.exit_code == 3 and "decode_regression" in result.output


def test_baseline_inconclusive(tmp_path):
    base = with_runs(tmp_path, "base")
    # one repeat 1.6x slower, the others as the baseline: a 17% slowdown that the repeats
    # cannot tell from noise; and the baseline measured on another CPU for ttft is not asked
    noisy = with_runs(tmp_path, "noisy", decode_scales=(1.0, 1.6, 1.0))
    lines = regressions(gate(noisy, baseline=base, only=["decode_regression"]))
    assert list(lines) == ["decode_regression"]
    assert lines["decode_regression"].verdict == Verdict.INCONCLUSIVE
    assert "decided after" not in lines["decode_regression"].reason  # max_seconds 0: stored only
    # a report written before the per-run samples were stored: nothing to compare
    old = json.loads(base.read_text())
    del old["models"][1]["decode_runs"]
    base.write_text(json.dumps(old))
    result = gate(with_runs(tmp_path, "current"), baseline=base)
    assert regressions(result)["decode_regression"].verdict == Verdict.INCONCLUSIVE
    assert result.exit_code == 4


def test_baseline_on_another_cpu_needs_any_host(tmp_path):
    base = with_runs(tmp_path, "base")
    data = json.loads(base.read_text())
    data["host"]["cpu_model"] = "another cpu"
    base.write_text(json.dumps(data))
    current = with_runs(tmp_path, "current")
    assert regressions(gate(current, baseline=base))["ttft_regression"].verdict == \
        Verdict.INCONCLUSIVE  # fmt: skip
    assert gate(current, baseline=base, any_host=True).verdict == Verdict.PASS


def test_mixed_reports_are_refused(tmp_path):
    lm = with_runs(tmp_path, "lm")
    classifier = tmp_path / "classifier.json"
    classifier.write_text(json.dumps({"schema_version": 1, "models": [{"name": "m"}]}))
    for current, base in ((lm, classifier), (classifier, lm)):
        result = runner.invoke(app, ["gate", str(current), "--baseline", str(base)])
        assert result.exit_code == 2, result.output
        assert "same kind" in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["gate", str(lm), "--baseline", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "report not found" in result.output


def test_baseline_figures_are_checked(tmp_path):
    base = with_runs(tmp_path, "base")
    bad = json.loads(base.read_text())
    bad["models"][1]["perplexity"] = "55"
    base.write_text(json.dumps(bad))
    result = runner.invoke(app, ["gate", str(with_runs(tmp_path, "c")), "--baseline", str(base)])
    assert result.exit_code == 2 and "field 'models[student].perplexity'" in result.output
    bad["models"][1]["perplexity"] = 55.0
    bad["models"][1]["decode_runs"] = [{"samples_ms": [-1.0]}]
    base.write_text(json.dumps(bad))
    result = runner.invoke(app, ["gate", str(with_runs(tmp_path, "c")), "--baseline", str(base)])
    assert result.exit_code == 2 and "models[student].decode_runs" in result.output


# --- latency budget lines by their interval -------------------------------------------------------

def one_line(tmp_path, name, runs, limit):
    """The gate's ``name`` line of a report whose student stored ``runs`` for it."""
    path = lm_report(tmp_path, limits={**LIMITS, name: limit})
    data = json.loads(path.read_text())
    data["models"][1]["decode_runs" if name.startswith("decode") else "ttft_runs"] = runs
    path.write_text(json.dumps(data))
    return next(line for line in gate(path).lines if line.name == name)


def spread(first_ms, step_ms, n=100, runs=4):
    """``n`` samples ``first_ms, first_ms + step_ms, ...`` dealt over ``runs`` runs."""
    values = [first_ms + i * step_ms for i in range(n)]
    return [LatencySamples(tuple(values[r::runs]), metadata={"unit": "process"}).to_dict()
            for r in range(runs)]  # fmt: skip


def test_latency_lines_by_their_interval(tmp_path):
    # 100 samples 40.00, 40.01, ..., 40.99 ms: p95 (linear) = 40 + 94.05 * 0.01 = 40.9405 ms;
    # its 95% interval lies between the 90th and the 100th value, [40.89, 40.99]
    runs = spread(40.0, 0.01)
    under = one_line(tmp_path, "decode_ms_per_token", runs, 41.5)
    assert under.verdict == Verdict.PASS and under.value == pytest.approx(40.9405)
    assert "100 samples from 4 run(s) (a fresh process per run)" in under.detail
    assert one_line(tmp_path, "decode_ms_per_token", runs, 40.5).verdict == Verdict.FAIL
    inside = one_line(tmp_path, "ttft_ms", runs, 40.95)  # limit inside [40.88, 40.99]
    assert inside.verdict == Verdict.INCONCLUSIVE and "uncertainty" in inside.reason
    # 45 samples (a run's 3 x 15 decode steps) cannot bound a p95 from above (72 needed),
    # however far under the limit; far over it, the lower bound still fails it
    few = spread(10.0, 0.01, n=45, runs=3)
    assert one_line(tmp_path, "decode_ms_per_token", few, 50.0).verdict == Verdict.INCONCLUSIVE
    assert one_line(tmp_path, "decode_ms_per_token", few, 5.0).verdict == Verdict.FAIL
    # a report written before the runs were stored: its p95 figure alone decides nothing
    data = json.loads(lm_report(tmp_path).read_text())
    del data["models"][1]["decode_runs"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = {line.name: line for line in gate(tmp_path / "old.json").lines}
    assert old["decode_ms_per_token"].verdict == Verdict.INCONCLUSIVE
    assert "no per-run 'decode_runs'" in old["decode_ms_per_token"].reason


# --- measured again (--max-seconds) ---------------------------------------------------------------

def fake_probe(monkeypatch, decode_ms=10.0, ttft_ms=100.0):
    """The LM time probe replaced: each 'process' returns ``new_tokens - 1`` decode samples and
    ``prefills`` ttft samples within 1% around the given medians; the calls are recorded."""
    from edgekd.lm.bench import LMSpeed

    calls = []

    def time_in_processes(path, prompt_tokens, new_tokens, processes, vocab_size, prefills):
        calls.append({"path": str(path), "prompt_tokens": prompt_tokens, "vocab": vocab_size,
                      "new_tokens": new_tokens, "prefills": prefills, "processes": processes})
        decode, ttft = (LatencySamples.from_dict(steady(ms, 1, n)[0]) for ms, n in
                        ((decode_ms, new_tokens - 1), (ttft_ms, prefills)))  # fmt: skip
        return LMSpeed(ttft, decode, prompt_tokens, (ttft,), (decode,))

    monkeypatch.setattr("edgekd.lm.bench.time_in_processes", time_in_processes)
    return calls


def with_file(path, model, runs=1):
    """The report at ``path`` with its student's file at ``model`` and ``runs`` stored runs of
    each figure (15 decode and 4 ttft samples each, as the benchmark takes them)."""
    data = json.loads(path.read_text())
    student = data["models"][1]
    student.update({"format": "onnx", "path": str(model), "size_bytes": model.stat().st_size,
                    "prompt_tokens": 5, "decode_runs": steady(10.0, runs, 15),
                    "ttft_runs": steady(100.0, runs, 4)})  # fmt: skip
    for run in student["decode_runs"] + student["ttft_runs"]:
        run["metadata"].update(prompt_tokens=5, new_tokens=16, prefills=4)
    data["student"] = {"vocab_size": 61}
    path.write_text(json.dumps(data))
    return path


def test_undecided_lines_are_measured_again(tmp_path, monkeypatch):
    from lm_device_fixtures import tiny_student

    from edgekd.lm.export import export_lm

    model = Path(export_lm(tiny_student(), tmp_path / "s.onnx", [[1, 2]], new_tokens=2).path)
    path = with_file(lm_report(tmp_path), model)
    stored = {line.name: line for line in gate(path).lines}
    # one run: 15 decode and 4 ttft samples, far under the limits but too few to bound a p95
    assert stored["decode_ms_per_token"].verdict == Verdict.INCONCLUSIVE
    assert stored["ttft_ms"].verdict == Verdict.INCONCLUSIVE
    calls = fake_probe(monkeypatch)
    result = gate(path, max_seconds=60)
    lines = {line.name: line for line in result.lines}
    assert result.verdict == Verdict.PASS
    # decode: 15 + 4 x 15 = 75 >= 72 samples; then ttft: 4 + 17 x 4 = 72, the 4 processes
    # added for decode counted (their ttft samples) and 13 more
    assert "75 samples from 5 run(s), 4 of them measured by the gate" in \
        lines["decode_ms_per_token"].detail  # fmt: skip
    assert "decided after 4 more process(es)" in lines["decode_ms_per_token"].reason
    assert "72 samples from 18 run(s), 17 of them measured by the gate" in \
        lines["ttft_ms"].detail  # fmt: skip
    assert "decided after 13 more process(es)" in lines["ttft_ms"].reason
    assert len(calls) == 17 and calls[0] == {"path": str(model), "prompt_tokens": 5,
                                             "vocab": 61, "new_tokens": 16, "prefills": 4,
                                             "processes": 1}  # fmt: skip
    # slow samples measured again fail the line
    fake_probe(monkeypatch, decode_ms=80.0)
    assert {line.name: line.verdict for line in gate(path, max_seconds=60).lines}[
        "decode_ms_per_token"] == Verdict.FAIL  # fmt: skip
    # the real probe, one round (no timing asserted): its process is added to the stored one
    monkeypatch.undo()
    lines = {line.name: line for line in gate(path, max_seconds=0.01).lines}
    assert "2 run(s), 1 of them measured by the gate" in lines["decode_ms_per_token"].detail


def test_a_student_file_that_is_gone_is_named(tmp_path):
    model = tmp_path / "student.onnx"
    model.write_bytes(b"0" * 100)
    path = with_file(lm_report(tmp_path), model)
    model.unlink()
    result = runner.invoke(app, ["gate", str(path), "--max-seconds", "5"])
    assert result.exit_code == 2, result.output
    assert str(model) in result.output and "--max-seconds 0" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert runner.invoke(app, ["gate", str(path), "--max-seconds", "0"]).exit_code == 4
    # a file of another size is not the one measured
    model.write_bytes(b"0" * 99)
    assert runner.invoke(app, ["gate", str(path), "--max-seconds", "5"]).exit_code == 2


def test_an_undecided_regression_is_measured_again(tmp_path, monkeypatch):
    from edgekd.hostinfo import host_info

    files = {}
    for name in ("base", "current"):
        files[name] = tmp_path / f"{name}.onnx"
        files[name].write_bytes(b"0" * 1000)
    base = with_runs(tmp_path, "base", size=1000)
    current = with_runs(tmp_path, "current", decode_scales=(1.0,), size=1000)
    for name, report in (("base", base), ("current", current)):
        data = json.loads(report.read_text())
        data["models"][1].update(format="onnx", path=str(files[name]))
        data["host"]["cpu_model"] = host_info()["cpu_model"]  # measured here
        report.write_text(json.dumps(data))
    only = ["decode_regression"]
    # one stored run against three: how far medians move between processes is unknown
    assert regressions(gate(current, baseline=base, only=only))["decode_regression"].verdict \
        == Verdict.INCONCLUSIVE  # fmt: skip
    calls = fake_probe(monkeypatch)
    line = regressions(gate(current, baseline=base, only=only, max_seconds=60))[
        "decode_regression"]  # fmt: skip
    assert line.verdict == Verdict.PASS and "decided after" in line.reason
    assert {c["path"] for c in calls} == {str(files["base"]), str(files["current"])}
    # the current report measured on another CPU: nothing of its student is added here (it
    # would pool two machines' timings); the baseline's side still takes processes
    data = json.loads(current.read_text())
    data["host"]["cpu_model"] = "another cpu"
    current.write_text(json.dumps(data))
    calls.clear()
    line = regressions(gate(current, baseline=base, only=only, max_seconds=60, any_host=True))[
        "decode_regression"]  # fmt: skip
    assert line.verdict == Verdict.INCONCLUSIVE
    assert calls and {c["path"] for c in calls} == {str(files["base"])}
    assert "measured on CPU 'another cpu'" in line.reason
