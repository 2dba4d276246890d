"""Reports re-render from a stored run folder; charts are real PNGs; README's CLI reference and
its tables of methods, student families and targets are generated and must match their sources."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.cli.docs import main as docs_main
from edgekd.report.plots import write_charts
from edgekd.results import BudgetLine, ModelResult, Report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def _model(name: str, role: str, p50: float, acc: float) -> ModelResult:
    return ModelResult(
        name=name,
        path=f"{name}.onnx",
        format="onnx",
        precision="fp32",
        provider="CPUExecutionProvider",
        params=1000,
        size_bytes=4096,
        latency_ms={"p50": p50, "p95": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "n": 30},
        peak_rss_mb=60.0,
        accuracy=acc,
        agreement_with_teacher=acc,
        role=role,
    )


def stored_run(folder: Path) -> Path:
    report = Report(
        target={
            "name": "mobile",
            "description": "phone",
            "budget": {"latency_ms": 5.0, "accuracy_drop": 0.02},
        },
        host={"cpu_model": "test cpu", "cores": 2},
        models=[
            _model("teacher-onnx", "teacher", 0.2, 0.99),
            _model("student-onnx", "student", 0.05, 0.98),
        ],
        budget=[BudgetLine("latency_ms", 5.0, 0.055, True, "ms", "student-onnx")],
        chosen="student-onnx",
        training={
            "method": "kd",
            "history": {"loss": [2.0, 1.0, 0.5], "val_accuracy": [0.5, 0.8, 0.9], "best_epoch": 2},
        },
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.to_json())
    return folder


def test_charts_are_valid_png_files(tmp_path) -> None:
    run = stored_run(tmp_path / "run")
    report = Report.load(run / "report.json")
    names = write_charts(report, run)
    assert names == ["accuracy_vs_latency.png", "training_curves.png"]
    for name in names:
        data = (run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_report_command_rerenders_md_json_html_without_recomputing(tmp_path) -> None:
    run = stored_run(tmp_path / "run")
    md = runner.invoke(app, ["report", str(run), "--format", "md"])
    assert md.exit_code == 0 and "| student-onnx * |" in md.stdout and "PASS" in md.stdout
    js = runner.invoke(app, ["report", str(run), "--format", "json"])
    assert json.loads(js.stdout)["chosen"] == "student-onnx"
    page = runner.invoke(
        app, ["report", str(run), "--format", "html", "--out", str(tmp_path / "r.html")]
    )
    assert page.exit_code == 0 and "<table>" in (tmp_path / "r.html").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no report.json" in bad.stderr


def test_compare_two_runs(tmp_path) -> None:
    a, b = stored_run(tmp_path / "a"), stored_run(tmp_path / "b")
    result = runner.invoke(app, ["compare", str(a), str(b), "--markdown"])
    assert result.exit_code == 0
    assert "| student-onnx | 0.0500 | 0.0500 | 1.00x |" in result.stdout


def test_readme_cli_reference_matches_the_app() -> None:
    assert docs_main(["--check", str(ROOT / "README.md")]) == 0


def test_readme_tables_list_every_registered_method_family_and_target() -> None:
    """The generated blocks come from the registries, so the check above covers new entries too."""
    from edgekd.distill.methods import all_methods
    from edgekd.students import all_families
    from edgekd.targets import list_targets

    readme = (ROOT / "README.md").read_text()
    names = [*all_methods(), *(f.name for f in all_families()), *(t.name for t in list_targets())]
    missing = [name for name in names if f"| `{name}`" not in readme]
    assert not missing, missing


# --- a causal-LM run ------------------------------------------------------------------------------

def stored_lm_run(folder: Path, texts: bool = True) -> Path:
    """A causal-LM run folder as ``edgekd.lm.pipeline`` leaves it: report.json, and report.md
    written from it (by hand: two models, one budget line, two prompts)."""
    from edgekd.report.lm import lm_markdown

    row = {"size_bytes": None, "top1_agreement": None, "kl_to_teacher": None, "ttft_ms": 12.5,
           "decode_tokens_per_s": 250.0, "continuations": [[5, 6], [7, 8]]}  # fmt: skip
    report = {
        "task": "causal-lm", "target": "mobile", "verdict": "pass",
        "teacher": {"source": "teacher-folder", "params": 557000},
        "student": {"params": 79000, "sizing": "fits every line"},
        "method": {"name": "fkl", "alpha": 0.5},
        "models": [{**row, "name": "teacher", "perplexity": 50.0},
                   {**row, "name": "student", "perplexity": 55.0, "size_bytes": 2**20,
                    "top1_agreement": 0.8, "kl_to_teacher": 0.12}],
        "budget": [{"name": "model_size_mb", "value": 1.0, "limit": 10.0, "unit": "MB",
                    "kind": "absolute", "passed": True}],
    }  # fmt: skip
    if texts:
        report["continuations"] = {"prompts": ["def f(", "a | b"],
                                   "texts": {"teacher": [" x):", " c"], "student": [" y):", ""]}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.md").write_text(lm_markdown(report))
    return folder


def test_report_rerenders_an_lm_run_as_written(tmp_path) -> None:
    run = stored_lm_run(tmp_path / "lm")
    out = tmp_path / "again.md"
    result = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == (run / "report.md").read_text()  # the run's own report.md
    md = out.read_text()
    assert "| student | 55.00 | 0.800 | 0.120 | 12.50 | 250.0 | 1.00 |" in md
    assert "| prompt | teacher | student |" in md and "| a \\| b | c |   |" in md
    assert "- model_size_mb: 1 (limit 10.0MB, absolute): pass" in md
    js = runner.invoke(app, ["report", str(run / "report.json"), "--format", "json"])
    assert json.loads(js.stdout) == json.loads((run / "report.json").read_text())
    page = runner.invoke(app, ["report", str(run), "--format", "html"])
    assert page.exit_code == 0 and "<pre># edgekd causal-LM run: mobile (pass)" in page.stdout


def test_an_lm_report_without_texts_shows_token_ids_and_compare_refuses_it(tmp_path) -> None:
    run = stored_lm_run(tmp_path / "lm", texts=False)
    md = runner.invoke(app, ["report", str(run)])
    assert md.exit_code == 0 and "| prompt 2 (token ids) | 7 8 | 7 8 |" in md.stdout
    result = runner.invoke(app, ["compare", str(run), str(stored_run(tmp_path / "c"))])
    assert result.exit_code == 2 and "a causal-LM report" in result.output
