"""``edgekd gate`` on a causal-LM report: its [lm] lines, NOT MEASURED, --require, --only, and
regressions against a baseline LM report (``--baseline``)."""

from __future__ import annotations

import json

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


def lm_report(tmp_path, ttft=150.0, memory=None, limits=None):
    student = {"name": "student", "size_bytes": 5 * MIB, "perplexity": 60.0,
               "decode_p95_ms": 40.0, "ttft_p95_ms": ttft, "peak_memory_mb": memory}  # fmt: skip
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
    # 40 <= 50 ms; 250 > 200 ms; memory not measured; 5 <= 10 MB; 60/50 - 1 = 0.2 <= 0.3
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

def repeats(median_ms, scales=(1.0, 1.01, 0.99), n=15):
    """Per-run samples as the LM bench stores an ONNX model's (a fresh process per run): each
    run ``n`` samples within 1.4% around ``median_ms`` times its scale."""
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
    assert "does not re-measure" in lines["decode_regression"].reason
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
