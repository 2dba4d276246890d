"""The whole default pipeline through the CLI, and its bad-input contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_surface import report_skeleton  # noqa: E402

SKELETON = Path(__file__).parent / "fixtures" / "report_skeleton.json"
runner = CliRunner()

REPORT_MODEL_KEYS = {
    "name",
    "path",
    "format",
    "precision",
    "provider",
    "params",
    "size_bytes",
    "latency_ms",
    "peak_rss_mb",
    "accuracy",
    "agreement_with_teacher",
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mobile"
    result = runner.invoke(
        app,
        [
            "distill",
            "--target",
            "mobile",
            "--epochs",
            "3",
            "--teacher-epochs",
            "8",
            "--bench-seconds",
            "0.05",
            "--bench-processes",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result


def test_default_pipeline_writes_a_complete_report(default_run) -> None:
    out, result = default_run
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["target"]["name"] == "mobile"
    assert {"cpu_model", "cores", "os", "python", "torch", "onnxruntime"} <= set(report["host"])
    names = [m["name"] for m in report["models"]]
    assert names[:3] == ["teacher-torch", "teacher-onnx", "student-onnx"]
    assert any(m["precision"] == "int8" for m in report["models"])
    for m in report["models"]:
        assert REPORT_MODEL_KEYS <= set(m)
        assert {"p50", "p95", "p99", "mean", "n"} <= set(m["latency_ms"])
        assert m["latency_ms"]["p50"] > 0 and m["size_bytes"] > 0 and m["peak_rss_mb"] > 0
        assert 0.0 <= m["accuracy"] <= 1.0
    lines = {b["name"]: b for b in report["budget"]}
    assert {"latency_ms", "peak_memory_mb", "model_size_kb", "params", "accuracy_drop"} <= set(
        lines
    )
    for b in report["budget"]:
        assert {"name", "limit", "value", "passed"} <= set(b)
    # The student is a real compression of the teacher and its files are all there.
    teacher, student = report["models"][1], report["models"][2]
    assert student["params"] < teacher["params"]
    for f in ("report.json", "report.md", "student.onnx", "teacher.onnx", "student.safetensors"):
        assert (out / f).is_file()
    assert not list(out.parent.glob(".*partial"))
    assert "budget verdict" in result.output
    # distill ends with the gate on the chosen student; its lines are the report's budget lines
    assert report["gate"]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert len(report["gate"]["lines"]) == len(report["budget"])
    assert f"gate: {report['gate']['verdict']}" in result.output


def test_report_keeps_every_field(default_run) -> None:
    """report.json's field names are a contract: new keys may appear, none may go."""
    out, _ = default_run
    now = report_skeleton(json.loads((out / "report.json").read_text()))
    if os.environ.get("EDGEKD_WRITE_SKELETON") == "1":
        SKELETON.write_text(json.dumps(now, indent=1) + "\n")
    frozen = json.loads(SKELETON.read_text())
    missing = {k: sorted(set(v) - set(now.get(k, []))) for k, v in frozen.items()}
    assert not {k: v for k, v in missing.items() if v}, missing


def test_second_run_reuses_cached_teacher(default_run, tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "distill",
            "--epochs",
            "1",
            "--teacher-epochs",
            "8",
            "--bench-seconds",
            "0.02",
            "--bench-processes",
            "1",
            "--out",
            str(tmp_path / "again"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["teacher"]["source"] == "default (cached)"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "watch"], "unknown target 'watch'"),
        (["--target", "missing.toml"], "missing.toml: target file not found"),
        (["--data", "nowhere.npz"], "nowhere.npz: data file not found"),
        (["--method", "nonsense"], "unknown method 'nonsense'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, args, needle) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["distill", *args, "--epochs", "1", "--teacher-epochs", "2", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_targets_json_and_help_does_not_import_torch() -> None:
    result = runner.invoke(app, ["targets", "--json"])
    assert result.exit_code == 0
    assert {t["name"] for t in json.loads(result.stdout)} >= {"mobile", "iot", "car"}
    code = (
        "import sys; from edgekd.cli import app; "
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_command_teacher_run_chooses_its_student_without_a_torch_teacher() -> None:
    """With --teacher-cmd the only teacher row is teacher-cmd (its answers, nothing to run);
    choosing the student once looked up teacher-torch and ended the run with a KeyError."""
    from types import SimpleNamespace

    from edgekd.pipeline import Quantized, _choose_student

    rows = [
        SimpleNamespace(name="student-onnx", role="student", latency_ms={}),
        SimpleNamespace(name="student-int8", role="student", latency_ms={}),
        SimpleNamespace(name="teacher-cmd", role="teacher"),
    ]
    selection = SimpleNamespace(chosen="int8-qdq", reason="fastest", warnings=("w",))
    kept = SimpleNamespace(name="int8-qdq", precision="int8")
    quantized = Quantized(selection, kept, (("student-int8", "int8"),))
    chosen, why, warnings = _choose_student(SimpleNamespace(), rows, quantized)
    assert (chosen.name, why, warnings) == ("student-int8", "fastest", ["w"])
