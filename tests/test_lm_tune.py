"""``edgekd tune`` on a causal-LM run: refused in one line that says what tune searches (tuning
an LM's own settings is a feature of its own), before anything is prepared or written."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgekd.cli import app

runner = CliRunner()


def test_tune_refuses_a_causal_lm_config_and_report(tmp_path):
    config = tmp_path / "lm.toml"
    config.write_text('task = "causal-lm"\n')
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"task": "causal-lm", "models": [{"name": "student"}]}))
    for given in (config, report):
        out = tmp_path / f"out-{given.suffix[1:]}"
        result = runner.invoke(app, ["tune", "--config", str(given), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert "causal-LM runs are not tuned" in result.output
        assert "tune searches classifier distillation settings" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
