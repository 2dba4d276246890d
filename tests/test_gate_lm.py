"""``edgekd gate`` on a causal-LM report: its [lm] lines, NOT MEASURED, --require, --only."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

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
        (["--baseline", str(path)], "not built yet"),
        (["--require", "accuracy_drop"], "unknown line 'accuracy_drop'"),
    ):
        result = runner.invoke(app, ["gate", str(path), *args])
        assert result.exit_code == 2 and message in result.output
    bad = lm_report(tmp_path, limits={**LIMITS, "ttft_ms": -1.0})
    result = runner.invoke(app, ["gate", str(bad)])
    assert result.exit_code == 2 and "target_lm.ttft_ms" in result.output
