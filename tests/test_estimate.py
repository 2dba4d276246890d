"""edgekd.sizing.roofline: roofline arithmetic by hand, monotonicity, calibration, host
measurement."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from edgekd.errors import BadInputError
from edgekd.sizing.onnx_cost import GraphCost, NodeCost, analyze_onnx
from edgekd.sizing.roofline import calibrate_estimator, estimate_latency, measure_host_device
from edgekd.targets import DeviceSpec, list_targets

torch.set_num_threads(1)

# 10 GFLOPS fp32, 40 GOPS int8, 2 GB/s, 5 us per op, 100 us per call, no fp16 units.
TOY = DeviceSpec(
    name="toy", fp32_gflops=10.0, int8_gops=40.0, memory_bandwidth_gbs=2.0,
    op_overhead_us=5.0, call_overhead_us=100.0,
)


def node(name, op, flops, in_b, out_b, w_b=0, precision="fp32") -> NodeCost:
    return NodeCost(name, op, flops // 2, flops, w_b, in_b, out_b, precision)


def toy_cost(*nodes: NodeCost) -> GraphCost:
    return GraphCost(
        nodes=nodes, macs=sum(n.macs for n in nodes), flops=sum(n.flops for n in nodes),
        params=0, weight_bytes=sum(n.weight_bytes for n in nodes), peak_activation_bytes=0,
        unknown_ops=(),
    )


def test_roofline_by_hand():
    cost = toy_cost(
        # conv: 2e6 FLOP / 10e9 = 200 us of compute vs 10 kB / 2e9 = 5 us of memory -> compute
        node("conv", "Conv", 2_000_000, 4_000, 4_000, w_b=2_000),
        # relu: 1e3 FLOP / 10e9 = 0.1 us vs 80 kB / 2e9 = 40 us -> memory-bound
        node("relu", "Relu", 1_000, 40_000, 40_000),
        # int8 matmul: 4e6 OP / 40e9 = 100 us vs 2 kB / 2e9 = 1 us -> compute, at int8 speed
        node("fc", "MatMulInteger", 4_000_000, 1_000, 500, w_b=500, precision="int8"),
    )
    est = estimate_latency(cost, TOY)
    per_node = {n.name: n for n in est.nodes}
    assert per_node["conv"].total_ms == pytest.approx((200 + 5) / 1e3)
    assert per_node["relu"].total_ms == pytest.approx((40 + 5) / 1e3)
    assert per_node["fc"].total_ms == pytest.approx((100 + 5) / 1e3)
    # (205 + 45 + 105) us of nodes + 100 us per call
    assert est.total_ms == pytest.approx(0.455)
    assert est.compute_bound_nodes == ("conv", "fc")
    assert est.memory_bound_nodes == ("relu",)
    assert est.label == "estimate" and est.device == "toy"
    assert json.loads(json.dumps(est.to_dict()))["total_ms"] == pytest.approx(0.455)


def test_fp16_runs_at_fp32_speed_without_fp16_units():
    cost = toy_cost(node("h", "MatMul", 1_000_000, 0, 0, precision="fp16"))
    slow = estimate_latency(cost, TOY)  # 1e6 / 10e9 = 100 us
    fast = estimate_latency(cost, DeviceSpec(**{**TOY.__dict__, "fp16_gflops": 20.0}))  # 50 us
    assert slow.nodes[0].compute_ms == pytest.approx(0.100)
    assert fast.nodes[0].compute_ms == pytest.approx(0.050)


def test_precision_override_and_validation():
    cost = toy_cost(node("m", "MatMul", 4_000_000, 0, 0))
    assert estimate_latency(cost, TOY, precision="int8").nodes[0].compute_ms == pytest.approx(0.1)
    with pytest.raises(BadInputError, match="precision"):
        estimate_latency(cost, TOY, precision="int4")


def test_constants_cost_nothing_and_views_move_no_bytes():
    cost = toy_cost(node("c", "Constant", 0, 0, 400), node("r", "Reshape", 0, 4_000, 4_000))
    est = estimate_latency(cost, TOY)
    assert [n.name for n in est.nodes] == ["r"]
    assert est.nodes[0].bound == "overhead"
    assert est.total_ms == pytest.approx((5 + 100) / 1e3)


# --- on real graphs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_paths(tmp_path_factory):
    """MLPs of growing width: strictly more MACs, weights and activations each step."""
    folder = tmp_path_factory.mktemp("mlps")
    paths = []
    for width in (8, 32, 128, 512):
        model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)).eval()
        path = folder / f"mlp{width}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (torch.randn(1, 64),), path, dynamo=False, input_names=["x"],
                output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
        paths.append(path)
    return paths


@pytest.mark.parametrize("target", list_targets(), ids=lambda t: t.name)
def test_more_macs_never_estimates_faster(mlp_paths, target):
    costs = [analyze_onnx(p) for p in mlp_paths]
    assert [c.macs for c in costs] == sorted(c.macs for c in costs)
    times = [estimate_latency(c, target.device).total_ms for c in costs]
    assert times == sorted(times)
    # and a bigger batch of the same model is never faster
    assert estimate_latency(analyze_onnx(mlp_paths[-1], batch_size=8), target.device).total_ms >= (
        times[-1]
    )


def test_calibration_perfect_order_gives_rho_one(mlp_paths):
    measured = [0.01, 0.02, 0.05, 0.2]  # same order as the models' size
    cal = calibrate_estimator(mlp_paths, measured, TOY)
    assert cal.spearman_rho == pytest.approx(1.0)
    assert len(cal.estimated_ms) == 4 and cal.device == "toy"
    errors = sorted(abs(e - m) / m for e, m in zip(cal.estimated_ms, measured, strict=True))
    assert cal.median_abs_rel_error == pytest.approx((errors[1] + errors[2]) / 2)
    reversed_cal = calibrate_estimator(mlp_paths, measured[::-1], TOY)
    assert reversed_cal.spearman_rho == pytest.approx(-1.0)
    assert json.loads(json.dumps(cal.to_dict()))["spearman_rho"] == pytest.approx(1.0)


def test_calibration_rejects_bad_input(mlp_paths):
    with pytest.raises(BadInputError, match="measured"):
        calibrate_estimator(mlp_paths, [1.0], TOY)
    with pytest.raises(BadInputError, match="positive"):
        calibrate_estimator(mlp_paths[:2], [1.0, -1.0], TOY)


def test_measure_host_device_is_sane():
    host = measure_host_device(seconds=0.3)
    for figure in ("fp32_gflops", "int8_gops", "memory_bandwidth_gbs", "call_overhead_us"):
        value = getattr(host, figure)
        assert math.isfinite(value) and value > 0, figure
    assert host.op_overhead_us >= 0
    # loose physical bounds for any CPU this runs on: 0.1 GFLOPS .. 10 TFLOPS on one thread
    assert 0.1 < host.fp32_gflops < 10_000
    assert 0.1 < host.memory_bandwidth_gbs < 10_000
