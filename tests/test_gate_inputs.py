"""Bad input to ``gate`` and ``bench``: exit 2, one line naming file and field, nothing written.

Each row: the command (``{x}`` names a file the fixture wrote), the expected exit code, a substring
of the error, and whether the error is edgekd's one line (``False``: the option parser's own usage
message, for options refused at parse time). Every case runs in an empty folder whose contents are
compared before and after: nothing may be left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_bench import _mlp
from test_gate import TARGET, model, report, runs
from typer.testing import CliRunner

from edgekd.cli import app

runner = CliRunner()


def _target(folder: Path, name: str, **budget) -> str:
    text = TARGET.format(latency_ms=budget.pop("latency_ms", 2.0), vs_teacher=0.5)
    for key, value in budget.items():
        text = text.replace(f"{key} = 0.02", f"{key} = {value}")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    good_target = _target(d, "good")
    good = report(good_target, model("s", runs("base", "base_rerun"))).to_dict()
    files = {"model": _mlp(d / "m.onnx"), "target": good_target}

    def write(name: str, data) -> None:
        path = d / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(json.dumps(data))
        files[name.split(".")[0]] = str(path)

    write("good.json", good)
    write("binary.json", bytes(range(256)) * 4)
    write("nomodels.json", {**good, "models": []})
    write("future.json", {**good, "schema_version": 999})
    write("stringversion.json", {**good, "schema_version": "1"})
    write("noversion.json", {k: v for k, v in good.items() if k != "schema_version"})
    write("list.json", [good])
    nan_target = {**good["target"], "budget": {**good["target"]["budget"], "accuracy_drop": "NaN"}}
    write("nanstored.json", {**good, "target": nan_target})
    # json.dumps writes NaN for float("nan"); the string above would be refused as a non-number
    text = Path(files["nanstored"]).read_text().replace('"NaN"', "NaN")
    Path(files["nanstored"]).write_text(text)
    files["drop2"] = _target(d, "drop2", accuracy_drop=2)
    files["dropnan"] = _target(d, "dropnan", accuracy_drop="nan")
    files["latinf"] = _target(d, "latinf", latency_ms="inf")
    files["latnan"] = _target(d, "latnan", latency_ms="nan")
    return files


CASES = [
    # gate: the report file
    ("gate {binary}", 2, "binary.json: not a report (a binary file", True),
    ("gate {nomodels}", 2, "nomodels.json: field 'models' is empty", True),
    ("gate {future}", 2, "future.json: field 'schema_version' is 999: written by a newer", True),
    ("gate {stringversion}", 2, "field 'schema_version' must be the integer 1, got '1'", True),
    ("gate {noversion}", 2, "noversion.json: field 'schema_version' is missing", True),
    ("gate {list}", 2, "list.json: not an edgekd report", True),
    ("gate {good} --baseline {future}", 2, "future.json: field 'schema_version'", True),
    # gate: limits, from a TOML file or stored in the report
    ("gate {good} --target {drop2}", 2, "drop2.toml: field 'budget.accuracy_drop' must be a", True),
    ("gate {good} --target {dropnan}", 2, "dropnan.toml: field 'budget.accuracy_drop'", True),
    ("gate {good} --target {latinf}", 2, "latinf.toml: field 'budget.latency_ms' must be a fin",
     True),
    ("gate {good} --target {latnan}", 2, "latnan.toml: field 'budget.latency_ms'", True),
    ("gate {nanstored}", 2, "nanstored.json: field 'target.budget.accuracy_drop'", True),
    ("gate {good} --max-seconds inf", 2, "--max-seconds must be a finite", True),
    ("gate {good} --max-seconds -1", 2, "--max-seconds", False),
    ("gate {good} --require speed", 2, "unknown gate line 'speed'", True),
    # bench
    ("bench {model} --min-time inf", 2, "(bench --min-time) must be a finite number", True),
    ("bench {model} --out .", 2, "--out '.': a folder", True),
    ("bench {model} --out nowhere/r.json", 2, "folder nowhere does not exist", True),
    ("bench {model} --out=", 2, "--out is empty", True),
    ("bench {model} --processes 0", 2, "--processes", False),
    ("distill --bench-processes 0", 2, "--bench-processes", False),
]


@pytest.mark.parametrize(("command", "code", "needle", "one_line"), CASES)
def test_bad_input(inputs, tmp_path, monkeypatch, command, code, needle, one_line):
    monkeypatch.chdir(tmp_path)
    args = [a.format(**inputs) for a in command.split()]
    out = tmp_path / "out"
    extra = ["--markdown", str(out / "g.md"), "--junit", str(out / "g.xml")]
    result = runner.invoke(app, args + (extra if args[0] == "gate" else []))
    assert result.exit_code == code, result.output
    text = " ".join(result.output.split())
    assert needle in text, result.output
    if one_line:
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_the_good_report_passes_the_same_checks(inputs):
    result = runner.invoke(app, ["gate", inputs["good"], "--target", inputs["target"]])
    assert result.exit_code in (0, 4), result.output  # a verdict, not a refusal


def test_onnx_runtime_logs_nothing_of_its_own_for_a_failing_model(tmp_path):
    """A model that fails while running: only the exception, none of ORT's "[E:onnxruntime" log
    lines (they would precede edgekd's one-line error)."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], initializer=[shape],
    )  # fmt: skip
    model_path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model_path)
    script = textwrap.dedent(f"""
        import numpy as np
        from edgekd.runtimes.ort_cpu import open_session
        s = open_session({str(model_path)!r}, 1)
        try:
            s.run(None, {{"x": np.zeros((1, 4), np.float32)}})
        except Exception:
            print("raised")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.stdout.strip() == "raised", proc.stderr
    assert "onnxruntime" not in proc.stderr, proc.stderr
