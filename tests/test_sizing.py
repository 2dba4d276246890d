"""Sizing a student to a target: monotone in the budget, the choice really fits, clear refusals."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data import load_data
from edgekd.errors import BadInputError
from edgekd.sizing import (
    MEMORY_FACTOR,
    SizingRequest,
    build_candidate,
    check_lines,
    size_student_to_budget,
)
from edgekd.students import count_params
from edgekd.targets import load_target

# A fixed baseline keeps these tests free of the fresh-process measurement and deterministic.
FAST = {"widths": (0.25, 0.5, 1.0, 2.0), "measure_host": False, "baseline_mb": 56.0}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The torch_cpu runtime sets torch's global thread count for its benchmark and keeps it; a
    # pipeline test run earlier in the session would leave export tracing on 2 busy cores.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def with_budget(target, **changes):
    return dataclasses.replace(target, budget=dataclasses.replace(target.budget, **changes))


@pytest.fixture(scope="module")
def iot_search(digits):
    return size_student_to_budget(load_target("iot"), digits, 140_458, **FAST)


def test_chosen_is_the_largest_fitting_candidate(iot_search) -> None:
    fitting = [c for c in iot_search.candidates if c.fits]
    assert iot_search.chosen.fits
    assert iot_search.chosen.params == max(c.params for c in fitting)
    # Candidates come smallest first, and every line is labelled with how it was obtained.
    params = [c.params for c in iot_search.candidates]
    assert params == sorted(params)
    kinds = {line.name: line.kind for line in iot_search.chosen.lines}
    assert kinds == {
        "params": "exact",
        "model_size_kb": "measured",
        "latency_ms": "estimate",
        "peak_memory_mb": "estimate",
        "share_of_teacher": "exact",
    }
    d = iot_search.to_dict()
    assert d["latency_label"] == "estimate" and d["chosen"]["fits"] is True
    json.dumps(d)  # report.json must be able to hold it


def test_a_larger_budget_never_picks_a_smaller_student(digits) -> None:
    iot = load_target("iot")
    chosen = []
    for scale in (0.05, 0.1, 0.3, 1.0, 4.0):
        target = with_budget(
            iot,
            params=int(iot.budget.params * scale),
            model_size_kb=iot.budget.model_size_kb * scale,
        )
        try:
            chosen.append(size_student_to_budget(target, digits, None, **FAST).chosen.params)
        except BadInputError:
            chosen.append(0)  # nothing fits: the smallest "choice"
    assert chosen == sorted(chosen) and chosen[-1] > chosen[0]


def test_monotone_over_random_budgets(iot_search) -> None:
    """Re-check the measured candidates against many random budget pairs: the choice for the
    larger budget (every line >=) is never smaller."""
    iot = load_target("iot")
    rng = random.Random(0)

    def choose(target):
        fits = [
            c
            for c in iot_search.candidates
            if all(x.passed for x in check_lines(c, target, "fp32", 140_458, 0.25))
        ]
        return max((c.params for c in fits), default=0)

    for _ in range(200):
        lo = {
            "params": rng.randint(100, 80_000),
            "model_size_kb": rng.uniform(1, 400),
            "latency_ms": rng.uniform(0.2, 1.0),
            "peak_memory_mb": rng.uniform(55, 57),
        }
        hi = {k: v * rng.uniform(1.0, 3.0) for k, v in lo.items()}
        hi["params"] = int(hi["params"])
        assert choose(with_budget(iot, **hi)) >= choose(with_budget(iot, **lo))


def test_chosen_student_really_fits_when_measured(iot_search, digits, tmp_path) -> None:
    from edgekd.bench.memory import peak_rss_mb
    from edgekd.export import export_onnx
    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency

    iot = load_target("iot")
    c = iot_search.chosen
    student = build_candidate(c, digits)
    assert count_params(student) == c.params <= iot.budget.params
    path = tmp_path / "student.onnx"
    export_onnx(
        student, path, digits.example_inputs(1), iot.opset, {"x": digits.test.inputs["x"][:64]}
    )
    size_kb = path.stat().st_size / 1024
    assert size_kb == pytest.approx(c.size_kb, abs=0.01) and size_kb <= iot.budget.model_size_kb
    est = estimate_latency(analyze_onnx(path), iot.device)
    assert est.label == "estimate"
    assert est.total_ms == pytest.approx(c.latency_estimate_ms) and est.total_ms <= 10.0
    rss = peak_rss_mb("ort_cpu", str(path), digits.example_inputs(1))
    assert rss <= iot.budget.peak_memory_mb
    cost = analyze_onnx(path)
    expected = 56.0 + MEMORY_FACTOR * (cost.weight_bytes + cost.peak_activation_bytes) / 2**20
    assert c.peak_memory_mb_estimate == pytest.approx(expected)


def test_unmeetable_budget_names_the_line_and_what_the_smallest_needs(digits) -> None:
    tiny = dataclasses.replace(with_budget(load_target("iot"), model_size_kb=1.0), name="tiny")
    with pytest.raises(BadInputError) as err:
        size_student_to_budget(tiny, digits, None, **FAST)
    assert re.fullmatch(
        r"no student fits target 'tiny': every cnn candidate breaks model_size_kb; "
        r"the smallest \(cnn width 0\.25 depth 2\) needs [\d.]+ KB > 1 KB",
        str(err.value),
    ), str(err.value)
    few = dataclasses.replace(with_budget(load_target("iot"), params=100), name="few")
    with pytest.raises(
        BadInputError,
        match=r"breaks params; the smallest \(cnn width 0\.25 "
        r"depth 2\) needs 590 parameters > 100$",
    ):
        size_student_to_budget(few, digits, None, **FAST)
    with pytest.raises(BadInputError) as err:
        size_student_to_budget(
            load_target("iot"), digits, 140_458, max_share_of_teacher=0.001, **FAST
        )
    assert str(err.value) == (
        "no student fits target 'iot': every cnn candidate breaks share_of_teacher; the smallest "
        "(cnn width 0.25 depth 2) needs 0.42% of the teacher's parameters > the 0.1% a student "
        "may have"
    )


def test_precision_must_be_one_the_target_runs(digits) -> None:
    with pytest.raises(BadInputError, match="target 'iot' does not run fp16"):
        size_student_to_budget(load_target("iot"), digits, None, precision="fp16", **FAST)


def test_the_request_is_checked_when_made(digits) -> None:
    iot = load_target("iot")
    with pytest.raises(BadInputError, match="target 'iot' does not run fp16"):
        SizingRequest(iot, digits, precision="fp16")
    with pytest.raises(BadInputError, match="max_share_of_teacher must be > 0, got 0"):
        SizingRequest(iot, digits, 140_458, max_share=0)
    request = SizingRequest(iot, digits, 140_458)
    assert request.breaks_exact_line(iot.budget.params + 1)
    assert request.breaks_exact_line(int(0.25 * 140_458) + 1)
    assert not request.breaks_exact_line(1000)


def test_sizing_and_the_gate_share_one_line_type(iot_search) -> None:
    """Sizing's lines are ``results.Line``; the gate's extend it. A sizing line's dict (kept in
    report.json under student.sizing) keeps its keys, in order."""
    from edgekd.gate import GateLine
    from edgekd.results import Line

    assert issubclass(GateLine, Line)
    line = iot_search.chosen.line("params")
    assert type(line) is Line and line.passed
    assert list(line.to_dict()) == ["name", "value", "limit", "unit", "kind", "passed"]
    assert Line("model_size_kb", 130.0, 100.0, " KB", "estimate").describe() == (
        "model_size_kb 130 KB > 100 KB (estimate)"
    )


def test_int8_columns_are_the_file_distill_writes(iot_search, digits, tmp_path) -> None:
    from edgekd.export import trace_bytes
    from edgekd.quantize import Int8StaticConfig, quantize
    from edgekd.sizing.onnx_cost import analyze_onnx
    from edgekd.sizing.roofline import estimate_latency

    c = iot_search.chosen
    (tmp_path / "m.onnx").write_bytes(
        trace_bytes(build_candidate(c, digits), {"x": digits.test.inputs["x"][:1]}, 17)
    )
    # distill's own quantization: default config, 256 calibration samples.
    quantize(tmp_path / "m.onnx", Int8StaticConfig(), tmp_path / "q.onnx", digits.train.inputs)
    assert c.int8_size_kb == pytest.approx((tmp_path / "q.onnx").stat().st_size / 1024, rel=0.01)
    est = estimate_latency(analyze_onnx(tmp_path / "q.onnx"), load_target("iot").device)
    assert c.int8_latency_estimate_ms == pytest.approx(est.total_ms)
    # Candidates that break an exact line are neither quantized nor timed.
    hopeless = [x for x in iot_search.candidates if x.params > 60_000]
    assert hopeless and all(x.int8_size_kb is None and x.host_ms is None for x in hopeless)


def test_mnist1d_like_sequences_use_the_1d_family() -> None:
    import numpy as np

    from edgekd.data import _three_way

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 40)).astype(np.float32)
    y = np.arange(120) % 4
    data = _three_way("seq", {"x": x}, y, "sequence", 0, 4)
    result = size_student_to_budget(load_target("mobile"), data, 20_000, **FAST)
    assert result.chosen.family == "cnn1d"
    assert result.chosen.params <= 0.25 * 20_000


runner = CliRunner()


def test_size_cli_json_and_table() -> None:
    result = runner.invoke(app, ["size", "--target", "iot", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["target"] == "iot" and d["chosen"]["fits"]
    assert {"params", "macs", "size_kb", "latency_estimate_ms", "host_ms", "failing"} <= set(
        d["candidates"][0]
    )
    assert d["candidates"][0]["host_ms"] > 0  # measured on this host
    table = runner.invoke(app, ["size", "--target", "iot"])
    assert table.exit_code == 0, table.output
    assert "est. ms" in table.output and "chosen: cnn" in table.output
    assert "(estimate)" in table.output


def test_size_cli_unmeetable_target_is_one_line_exit_2(tmp_path) -> None:
    text = load_target("iot").path
    toml = open(text).read().replace("model_size_kb = 256.0", "model_size_kb = 1.0")
    path = tmp_path / "tiny.toml"
    path.write_text(toml.replace('name = "iot"', 'name = "tiny"'))
    result = runner.invoke(app, ["size", "--target", str(path)])
    assert result.exit_code == 2
    assert (
        "edgekd: error: no student fits target 'tiny': every cnn candidate breaks "
        "model_size_kb; the smallest (cnn width 0.25 depth 2) needs" in result.output
    )


def test_students_cli_lists_every_family() -> None:
    result = runner.invoke(app, ["students", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert {"mlp", "cnn", "mobilenet", "cnn1d", "transformer"} <= set(rows)
    assert rows["transformer"]["input_kinds"] == ["tokens"]
    assert "image" in rows["cnn"]["input_kinds"]
