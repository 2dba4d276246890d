"""Quantization: one handler per config type, every mode runs and is smaller, the selection keeps
the accuracy budget, and node exclusion rescues a model built to be quantization-sensitive."""

from __future__ import annotations

import dataclasses
import importlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data import Split
from edgekd.errors import BadInputError
from edgekd.export import export_onnx
from edgekd.hostinfo import host_threads
from edgekd.quantize import (
    HANDLERS,
    Fp16Config,
    Int8DynamicConfig,
    Int8StaticConfig,
    QuantConfig,
    config_from_dict,
    preprocess,
    quantize,
)
from edgekd.quantize.select import MODES, QuantSearch, candidate_configs, select_quantization
from edgekd.quantize.variants import (
    QuantSelection,
    Variant,
    choose_quantized_variant,
    format_variants,
    selection_warnings,
)
from edgekd.targets import load_target

quantize_module = importlib.import_module("edgekd.quantize")  # edgekd.quantize is the verb

RNG = np.random.default_rng(0)
FAST = QuantSearch(latency_min_time_s=0.02, duel_time_s=0.05, num_samples=64)


def _logits(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A 32-128-128-10 MLP; labels are its own predictions, so fp32 accuracy is 1.0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    ).eval()
    x = RNG.standard_normal((400, 32)).astype(np.float32)
    y = model(torch.from_numpy(x)).argmax(-1).numpy()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    export_onnx(model, path, {"x": x[:1]}, 17, {"x": x})
    return path, x, y


def _config_types(base: type = QuantConfig) -> set[type]:
    return {t for sub in base.__subclasses__() for t in (sub, *_config_types(sub))}


def test_every_config_type_has_a_handler():
    assert _config_types() == set(HANDLERS)


# Every mode's own examples (``examples()`` on each config type): a new mode is its config type and
# handler in edgekd.quantize, and this list grows by itself.
CONFIGS = [config for config_type in HANDLERS for config in config_type.examples()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_every_example_round_trips_through_report_json(config):
    """report.json's ``export.quantization.*.config`` is ``to_dict()``; it makes the same config."""
    with_nodes = dataclasses.replace(config, nodes_to_exclude=("/fc1/Gemm", "/fc2/Gemm"))
    for c in (config, with_nodes):
        again = config_from_dict(json.loads(json.dumps(c.to_dict())))
        assert again == c and type(again) is type(c) and again.name == c.name


def test_config_from_dict_rejects_what_it_cannot_make():
    with pytest.raises(BadInputError, match="type 'Int4Config' unknown"):
        config_from_dict({"type": "Int4Config"})
    with pytest.raises(BadInputError, match="no field"):
        config_from_dict({"type": "Int8DynamicConfig", "calibration": "minmax"})
    with pytest.raises(BadInputError, match="calibration 'mse' unknown"):
        config_from_dict({"type": "Int8StaticConfig", "calibration": "mse"})


def test_each_mode_is_named_by_one_config_type_and_searched_through_its_grid():
    assert MODES == ("dynamic", "qdq", "qoperator", "fp16")
    owners = [mode for config_type in HANDLERS for mode in config_type.modes]
    assert len(set(owners)) == len(owners)  # no mode claimed by two config types
    everything = QuantSearch()
    for config_type in HANDLERS:
        grid = config_type.grid(everything)
        assert grid and all(type(c) is config_type for c in grid)
        only_others = QuantSearch(modes=tuple(m for m in MODES if m not in config_type.modes))
        assert config_type.grid(only_others) == ()


INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "QGemm", "QLinearMatMul", "MatMulInteger"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_each_mode_runs_and_is_smaller(mlp, tmp_path, config):
    path, x, _ = mlp
    out = quantize(path, config, tmp_path / "q.onnx", {"x": x[:64]})
    assert out.stat().st_size < path.stat().st_size
    got, want = _logits(out, x), _logits(path, x)
    assert got.shape == want.shape
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.9
    graph = onnx.load(str(out)).graph
    if config.precision == "int8":
        assert INT8_OPS & {n.op_type for n in graph.node}
    else:
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]  # no temporary files left


def test_quantize_preprocesses_with_quant_pre_process(mlp, tmp_path, monkeypatch):
    calls = []

    def spy(src, dst):
        calls.append(src)
        return preprocess(src, dst)

    monkeypatch.setattr(quantize_module, "preprocess", spy)
    path, _, _ = mlp
    quantize(path, Int8DynamicConfig(), tmp_path / "q.onnx")
    assert calls == [path]


def test_configs_are_validated(mlp, tmp_path):
    with pytest.raises(BadInputError, match="calibration 'mse' unknown"):
        Int8StaticConfig(calibration="mse")
    with pytest.raises(BadInputError, match="quant_format"):
        Int8StaticConfig(quant_format="int4")
    with pytest.raises(BadInputError, match="num_samples"):
        Int8StaticConfig(num_samples=0)
    with pytest.raises(BadInputError, match="calibration data"):
        quantize(mlp[0], Int8StaticConfig(), tmp_path / "q.onnx")
    with pytest.raises(BadInputError, match="not in the graph: /nope"):
        quantize(mlp[0], Int8DynamicConfig(nodes_to_exclude=("/nope",)), tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(
    "config", [Int8DynamicConfig(), Int8StaticConfig(quant_format="qoperator", num_samples=64)]
)
def test_excluded_node_stays_fp32(mlp, tmp_path, config):
    path, x, _ = mlp
    pre = preprocess(path, tmp_path / "pre.onnx")
    gemms = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Gemm"]
    config = type(config)(**{**config.__dict__, "nodes_to_exclude": (gemms[0],)})
    out = quantize(pre, config, tmp_path / "q.onnx", {"x": x[:64]}, preprocessed=True)
    ops = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    # Dynamic quantization renames Gemm to "<name>_MatMul"; excluded it stays float either way.
    kept = ops.get(gemms[0]) or ops.get(f"{gemms[0]}_MatMul")
    assert kept in ("Gemm", "MatMul")
    assert any(op in ("MatMulInteger", "QGemm") for op in ops.values())


def test_fp16_only_for_targets_that_list_it():
    assert not any(isinstance(c, Fp16Config) for c in candidate_configs(load_target("mobile")))
    assert any(isinstance(c, Fp16Config) for c in candidate_configs(load_target("car")))
    assert all(c.precision == "int8" for c in candidate_configs(load_target("iot")))


def test_selection_respects_the_accuracy_budget(mlp, tmp_path):
    path, x, y = mlp
    target = load_target("mobile")
    sel = select_quantization(
        path, target, {"x": x[:128]}, Split({"x": x[128:]}, y[128:]), tmp_path, search=FAST
    )
    assert sel.allowed_drop == target.budget.accuracy_drop
    chosen = sel.chosen_variant
    assert chosen.fits and chosen.accuracy_drop <= sel.allowed_drop
    for v in sel.variants:
        assert v.error is None
        assert v.fits == (v.accuracy_drop <= sel.allowed_drop + 1e-9)
    fitting = [sel.fp32, *(v for v in sel.variants if v.fits)]
    fastest = min(fitting, key=lambda v: v.latency_ms["p50"])
    # the screen's fastest, or the other of the two leaders re-measured against it, paired
    assert sel.duel is not None and fastest.name in (sel.duel["first"], sel.duel["second"])
    assert chosen.name in (sel.duel["first"], sel.duel["second"])
    if chosen is not fastest and not sel.duel["tie"]:
        assert sel.duel["faster"] == chosen.name
    # ranked at one thread; the target's threads (capped at this host's cores) reported beside
    assert sel.threads == 1 and sel.target_threads == host_threads(target.threads)
    for v in (sel.fp32, *sel.variants):
        assert (
            v.latency_ms["threads"] == 1
            and v.latency_ms["basis"] == "clean samples"
            or (v.latency_ms["basis"].startswith("all samples"))
        )
        assert v.latency_ms_target["threads"] == sel.target_threads
        assert 0 <= v.latency_ms["descheduled_fraction"] <= 1
    assert {c.name for c in candidate_configs(target, FAST)} == {v.name for v in sel.variants}
    assert any(w.startswith("CPU int8 support on this host:") for w in sel.warnings)
    assert sel.warnings[-1].startswith(f"chosen: {sel.chosen}: ")
    json.dumps(sel.to_dict())
    table = format_variants(sel).splitlines()
    assert len(table) == 2 + len(sel.variants)
    assert [line.split()[1] for line in table if line.startswith("*")] == [sel.chosen]


def test_selection_without_labels_uses_agreement_and_a_zero_budget(mlp, tmp_path):
    path, x, _ = mlp
    search = QuantSearch(
        modes=("dynamic",),
        allowed_drop=0.0,
        latency_min_time_s=0.02,
        duel_time_s=0.05,
        exclude_nodes=False,
    )
    sel = select_quantization(
        path, load_target("mobile"), {"x": x[:64]}, Split({"x": x}), tmp_path, search=search
    )
    assert sel.accuracy_basis == "agreement with fp32"
    for v in sel.variants:
        assert v.accuracy is None
        assert v.accuracy_drop == pytest.approx(1 - v.agreement_with_fp32)
    assert sel.chosen_variant.accuracy_drop == 0.0


class Sensitive(nn.Module):
    """fc2 has one output channel with a 1e4 offset that nothing reads: a per-tensor int8 scale
    for that tensor (fc2's output, fc3's input) wipes out the small activations next to it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 33), nn.Linear(33, 10)
        with torch.no_grad():
            self.fc2.weight[32].zero_()
            self.fc2.bias[32] = 1e4
            self.fc3.weight[:, 32] = 0.0

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_node_exclusion_rescues_a_quantization_sensitive_model(tmp_path):
    model = Sensitive().eval()
    x = RNG.standard_normal((600, 16)).astype(np.float32)
    y = model(torch.from_numpy(x)).argmax(-1).numpy()
    path = tmp_path / "sensitive.onnx"
    export_onnx(model, path, {"x": x[:1]}, 17, {"x": x})
    search = QuantSearch(
        modes=("qdq",),
        granularities=("per-tensor",),
        fallback_calibrations=("percentile",),
        latency_min_time_s=0.02,
        duel_time_s=0.05,
        allowed_drop=0.02,
    )
    sel = select_quantization(
        path,
        load_target("mobile"),
        {"x": x[:200]},
        Split({"x": x[200:]}, y[200:]),
        tmp_path / "v",
        search=search,
    )
    by_stage = {v.stage: v for v in sel.variants}
    assert not by_stage["grid"].fits and by_stage["grid"].accuracy_drop > 0.1
    assert not by_stage["calibration"].fits  # percentile keeps the outlier (3% of the values)
    rescued = by_stage["exclusion"]
    assert rescued.fits
    assert set(rescued.excluded_nodes) == {"/fc2/Gemm", "/fc3/Gemm"}  # fc1 stays int8
    ranked = [s.nodes for s in sel.sensitivity]
    assert set(ranked[0] + ranked[1]) == {"/fc2/Gemm", "/fc3/Gemm"}
    assert ranked[2] == ("/fc1/Gemm",)
    assert any("kept in fp32" in w and "/fc3/Gemm" in w for w in sel.warnings)
    assert sel.chosen in (rescued.name, "fp32")  # whichever is faster here; both fit


def test_cli_quantize(mlp, tmp_path):
    path, x, y = mlp
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "q"
    res = CliRunner().invoke(
        app, ["quantize", str(path), "--data", str(data), "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    sel = json.loads(res.stdout)
    assert sel["chosen"] in {"fp32", *(v["name"] for v in sel["variants"])}
    assert json.loads((out / "quantization.json").read_text())["chosen"] == sel["chosen"]
    for v in sel["variants"]:
        assert (out / v["path"].rsplit("/", 1)[-1]).is_file()
    res = CliRunner().invoke(app, ["quantize", str(path), "--out", str(tmp_path / "q2")])
    assert res.exit_code == 2 and "takes samples of shape" in res.output  # digits: 1x8x8
    assert not (tmp_path / "q2").exists()


def _variant(name, precision, p50_ms, drop=0.0, fits=True):
    return Variant(name, precision, "", 1, {"p50": p50_ms, "p95": p50_ms}, None, drop, 1.0, fits)


def test_warnings_say_when_int8_is_slower_and_why_fp32_won():
    # The reference point: a 40-100-100-10 MLP, 7.0 us fp32 vs 9.5 us int8.
    fp32 = _variant("fp32", "fp32", 0.0070)
    slow = _variant("int8-dynamic", "int8", 0.0095)
    slower = _variant("int8-qdq-slow", "int8", 0.0084)
    chosen, reason = choose_quantized_variant(fp32, [slow, slower], 0.02)
    assert chosen is fp32 and "fp32 (7.0 us p50) is faster" in reason
    assert "int8-qdq-slow 8.4 us" in reason and "re-measured against int8-qdq-slow" in reason
    # 7.1 us is within 5% of 7.0: a near-tie, which goes to the smaller int8 variant
    tie = _variant("int8-qdq", "int8", 0.0071)
    chosen, reason = choose_quantized_variant(fp32, [slow, tie], 0.02)
    assert chosen is tie and "a near-tie with fp32" in reason
    sel = QuantSelection(fp32, (slow, tie), "fp32", reason, 0.02, "labels", "AVX512-VNNI", 1, 1)
    lines = selection_warnings(sel)
    assert "int8-dynamic: int8 is slower than fp32 here (9.5 us vs 7.0 us p50)" in lines
    assert "int8-qdq: int8 is no faster than fp32 here (7.1 us vs 7.0 us p50, within 5%)" in lines
    assert lines[0].startswith("CPU int8 support on this host: AVX512-VNNI")
    # 784-1200-1200-10: 130 us fp32, 44 us int8 -> int8 chosen, no speed warning.
    fast = _variant("int8-qdq", "int8", 0.044)
    chosen, reason = choose_quantized_variant(_variant("fp32", "fp32", 0.130), [fast], 0.02)
    assert chosen is fast and "2.95x" in reason
