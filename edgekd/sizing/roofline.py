"""Roofline latency estimate for a device we do not have, and how far to trust it.

Each node takes ``max(compute, memory) + op_overhead``: its FLOPs at the device's sustained
throughput for the node's precision, or its bytes at the device's memory bandwidth, whichever is
slower (Williams, Waterman & Patterson, "Roofline", CACM 2009,
https://doi.org/10.1145/1498765.1498785), plus the runtime's fixed cost of launching a kernel. One
call adds ``call_overhead``. The figures come from a ``DeviceSpec`` (``targets/*.toml``), or from
this host via ``measure_host_device`` so the model can be checked against measurements here
(``calibrate_estimator``) before it is trusted for a device we cannot run on.

The estimate is graph-level: it does not know which nodes a runtime fuses (ORT folds Conv+Relu,
Gemm+Relu, DQ->Conv->Q), so it is a ranking and order-of-magnitude tool; results are labelled
``"estimate"`` and never stand in for a measurement. Caches are modelled in one coarse step: where
the device gives ``cache_mb``/``cache_bandwidth_gbs`` and the graph's weights plus peak activations
fit in that cache, every byte moves at the cache's bandwidth (a model called in a loop stays
resident); otherwise at DRAM bandwidth.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import BadInputError
from edgekd.sizing.onnx_cost import GraphCost, analyze_onnx
from edgekd.targets import PRECISIONS, DeviceSpec

# Ops that launch no kernel: ORT turns Constant nodes into initializers when it loads the model.
_NO_KERNEL = {"Constant"}
# Ops that ORT runs as views of their input buffer: they cost a launch but move no bytes.
_VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


@dataclass(frozen=True)
class NodeEstimate:
    name: str
    op_type: str
    precision: str
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    total_ms: float
    bound: str  # "compute", "memory" or "overhead" (no work at all)


@dataclass(frozen=True)
class LatencyEstimate:
    """A modelled latency, never a measurement: ``label`` is always ``"estimate"``."""

    total_ms: float
    compute_bound_nodes: tuple[str, ...]
    memory_bound_nodes: tuple[str, ...]
    nodes: tuple[NodeEstimate, ...]
    device: str
    call_overhead_ms: float
    precision: str | None = None
    label: str = "estimate"
    cache_resident: bool = False  # bytes charged at the device's cache bandwidth

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _throughput_gops(device: DeviceSpec, precision: str) -> float:
    if precision == "int8":
        return device.int8_gops
    if precision in ("fp16", "bf16") and device.fp16_gflops > 0:
        return device.fp16_gflops
    return device.fp32_gflops  # fp16 without fp16 units runs at fp32 speed (or worse)


def estimate_latency(
    cost: GraphCost, device: DeviceSpec, precision: str | None = None
) -> LatencyEstimate:
    """Roofline latency of one call of the graph ``cost`` describes, on ``device``.

    ``precision`` (``fp32``/``fp16``/``int8``) overrides every node's arithmetic throughput for a
    what-if; bytes stay those of the graph, so to estimate a quantized model, analyze the quantized
    graph instead.

    >>> from edgekd.targets import load_target
    >>> iot = load_target("iot").device
    >>> est = estimate_latency(analyze_onnx("student.onnx"), iot)  # doctest: +SKIP
    >>> est.total_ms, est.label  # doctest: +SKIP
    (0.41, 'estimate')
    """
    if precision is not None and precision not in PRECISIONS:
        raise BadInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for field in ("fp32_gflops", "int8_gops", "memory_bandwidth_gbs"):
        if getattr(device, field) <= 0:
            raise BadInputError(f"device {device.name!r}: {field} must be > 0")
    resident = _cache_resident(cost, device)
    gbs = device.cache_bandwidth_gbs if resident else device.memory_bandwidth_gbs
    bandwidth = gbs * 1e9  # bytes/s
    overhead_ms = device.op_overhead_us / 1e3
    nodes = []
    for node in cost.nodes:
        if node.op_type in _NO_KERNEL:
            continue
        node_precision = precision or node.precision
        compute_ms = node.flops / (_throughput_gops(device, node_precision) * 1e9) * 1e3
        moved = 0 if node.op_type in _VIEW_OPS else (
            node.input_bytes + node.output_bytes + node.weight_bytes
        )
        memory_ms = moved / bandwidth * 1e3
        if compute_ms == 0 and memory_ms == 0:
            bound = "overhead"
        else:
            bound = "compute" if compute_ms >= memory_ms else "memory"
        nodes.append(
            NodeEstimate(
                name=node.name,
                op_type=node.op_type,
                precision=node_precision,
                compute_ms=compute_ms,
                memory_ms=memory_ms,
                overhead_ms=overhead_ms,
                total_ms=max(compute_ms, memory_ms) + overhead_ms,
                bound=bound,
            )
        )
    call_ms = device.call_overhead_us / 1e3
    return LatencyEstimate(
        total_ms=sum(n.total_ms for n in nodes) + call_ms,
        compute_bound_nodes=tuple(n.name for n in nodes if n.bound == "compute"),
        memory_bound_nodes=tuple(n.name for n in nodes if n.bound == "memory"),
        nodes=tuple(nodes),
        device=device.name,
        call_overhead_ms=call_ms,
        precision=precision,
        cache_resident=resident,
    )


def _cache_resident(cost: GraphCost, device: DeviceSpec) -> bool:
    if device.cache_mb <= 0 or device.cache_bandwidth_gbs <= 0:
        return False
    return cost.weight_bytes + cost.peak_activation_bytes <= device.cache_mb * 2**20


# --- this host's figures -------------------------------------------------------------------------


def _median_seconds(fn: Callable[[], object], budget_s: float, min_runs: int = 5) -> float:
    """Median wall time of ``fn`` over as many runs as fit in ``budget_s`` (after one warm-up)."""
    fn()
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if len(times) >= 10_000:
            break
    return statistics.median(times)


def _ort_session(model: Any, threads: int, optimize: bool = True) -> Any:
    from edgekd.runtimes.ort_cpu import open_session

    # optimize=False keeps every node: the point is to time them, not to let ORT fold them away.
    return open_session(model.SerializeToString(), threads, optimize=optimize)


def _matmul_model(n: int, integer: bool) -> Any:
    from onnx import TensorProto, helper

    if integer:
        # ORT's MLAS int8 GEMM takes uint8 activations and int8 weights (what quantize_dynamic
        # emits).
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "matmul", [a, b], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _add_chain_model(length: int) -> Any:
    from onnx import TensorProto, helper

    names = ["x"] + [f"t{i}" for i in range(length)]
    nodes = [helper.make_node("Add", [names[i], "x"], [names[i + 1]]) for i in range(length)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "chain", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _measure_gemm_gops(n: int, integer: bool, threads: int, budget_s: float) -> float:
    sess = _ort_session(_matmul_model(n, integer), threads)
    rng = np.random.default_rng(0)
    if integer:
        feeds = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                 "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    else:
        feeds = {"a": rng.standard_normal((n, n), dtype=np.float32),
                 "b": rng.standard_normal((n, n), dtype=np.float32)}
    seconds = _median_seconds(lambda: sess.run(None, feeds), budget_s)
    return 2 * n**3 / seconds / 1e9


def _measure_bandwidth_gbs(budget_s: float, mib: float = 64) -> float:
    # By default far larger than any L3 cache, so the copy streams through DRAM: one read + one
    # write per byte.
    src = np.ones(int(mib * 2**20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = _median_seconds(lambda: np.copyto(dst, src), budget_s, min_runs=3)
    return 2 * src.nbytes / seconds / 1e9


def _last_level_cache_mb() -> float:
    """Size of this CPU's last-level cache from Linux sysfs; 0 where unknown."""
    from pathlib import Path

    best_level, size_mb = 0, 0.0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or level <= best_level:
            continue
        scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(text[-1:], 1 / 2**20)
        try:
            best_level, size_mb = level, float(text.rstrip("KMG")) * scale
        except ValueError:
            continue
    return size_mb


def _measure_overheads_us(threads: int, budget_s: float, length: int = 100) -> tuple[float, float]:
    """(per-op, per-call) overhead: a one-Add call is the call cost; the extra time of a
    ``length``-Add chain over it, divided by the extra nodes, is the per-op cost."""
    x = {"x": np.ones((1, 4), dtype=np.float32)}
    one = _ort_session(_add_chain_model(1), threads, optimize=False)
    chain = _ort_session(_add_chain_model(length), threads, optimize=False)
    t_one = _median_seconds(lambda: one.run(None, x), budget_s / 2)
    t_chain = _median_seconds(lambda: chain.run(None, x), budget_s / 2)
    per_op = max(t_chain - t_one, 0.0) / (length - 1)
    return per_op * 1e6, max(t_one - per_op, 0.0) * 1e6


def measure_host_device(seconds: float = 2.0, threads: int = 1) -> DeviceSpec:
    """Measure this host's roofline figures with ONNX Runtime (CPU, ``threads`` threads).

    fp32: a 256x256x256 MatMul; int8: the same MatMulInteger (uint8 x int8, MLAS's int8 GEMM);
    bandwidth: a 64 MiB numpy copy, bytes read + written over time; cache: the last-level cache's
    size (Linux sysfs) and the bandwidth of a copy whose two buffers fill a quarter of it (not
    modelled where the size is unknown); op overhead: the extra time of a
    100-node chain of tiny Adds over a single Add, per extra node (graph optimizations off so no
    node is folded); call overhead: one single-Add call minus its node. Each figure is the median
    over a share of ``seconds``. The GEMM size is moderate on purpose: small models run small
    kernels, far from the large-GEMM peak.

    >>> host = measure_host_device(seconds=1.0)  # doctest: +SKIP
    >>> host.fp32_gflops > 0  # doctest: +SKIP
    True
    """
    share = seconds / 6
    fp32 = _measure_gemm_gops(256, integer=False, threads=threads, budget_s=share)
    int8 = _measure_gemm_gops(256, integer=True, threads=threads, budget_s=share)
    bandwidth = _measure_bandwidth_gbs(share)
    cache_mb = _last_level_cache_mb()
    cache_gbs = _measure_bandwidth_gbs(share, mib=cache_mb / 8) if cache_mb > 0 else 0.0
    op_us, call_us = _measure_overheads_us(threads, 2 * share)
    memory_mb = 0.0
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):  # not POSIX: leave it unknown
        pass
    cpu = platform.processor() or platform.machine()
    return DeviceSpec(
        name=f"host ({cpu}, {threads} thread{'s' if threads > 1 else ''}, measured)",
        fp32_gflops=fp32,
        int8_gops=int8,
        memory_bandwidth_gbs=bandwidth,
        op_overhead_us=op_us,
        call_overhead_us=call_us,
        fp16_gflops=0.0,  # ORT's CPU provider has no fast fp16 kernels on common x86/Arm builds
        memory_mb=memory_mb,
        cache_mb=cache_mb,
        cache_bandwidth_gbs=cache_gbs,
    )


# --- how far to trust it -------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Estimated vs measured latency over a set of models on one device.

    ``spearman_rho`` is the rank correlation (does the estimate order models right?);
    ``median_abs_rel_error`` is median(|estimated - measured| / measured) (is it the right size?);
    ``scale`` = median(measured / estimated), a factor that would remove the systematic bias.
    """

    device: str
    models: tuple[str, ...]
    estimated_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    spearman_rho: float
    spearman_p: float
    median_abs_rel_error: float
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def calibrate_estimator(
    models: Sequence[str | os.PathLike[str]],
    measured_ms: Sequence[float],
    device: DeviceSpec,
    batch_size: int = 1,
) -> Calibration:
    """Compare ``estimate_latency`` with measured latencies of the same models on ``device``.

    What to expect: FLOPs alone reach a Spearman rho of about 0.77-0.85 against measured latency
    on real devices (HELP, Lee et al., NeurIPS 2021, https://arxiv.org/abs/2106.08630), and the
    kernel-level predictor nn-Meter is within +-10% for 99% of models on a Pixel 4 CPU (Zhang et
    al., MobiSys 2021, https://doi.org/10.1145/3458864.3467882). A roofline over graph nodes sits
    between: good at ranking, rougher on absolute time.

    >>> cal = calibrate_estimator(["a.onnx", "b.onnx"], [0.12, 0.5], host)  # doctest: +SKIP
    >>> cal.spearman_rho  # doctest: +SKIP
    1.0
    """
    from scipy.stats import spearmanr

    if len(models) != len(measured_ms):
        raise BadInputError(f"{len(models)} models but {len(measured_ms)} measured latencies")
    if len(models) < 2:
        raise BadInputError("calibration needs at least 2 models")
    if any(not (m > 0 and math.isfinite(m)) for m in measured_ms):
        raise BadInputError("measured latencies must be positive and finite")
    estimated = [
        estimate_latency(analyze_onnx(m, batch_size=batch_size), device).total_ms for m in models
    ]
    measured = [float(m) for m in measured_ms]
    result = spearmanr(estimated, measured)
    errors = [abs(e - m) / m for e, m in zip(estimated, measured, strict=True)]
    return Calibration(
        device=device.name,
        models=tuple(os.fspath(m) for m in models),
        estimated_ms=tuple(estimated),
        measured_ms=tuple(measured),
        spearman_rho=float(result.statistic),
        spearman_p=float(result.pvalue),
        median_abs_rel_error=statistics.median(errors),
        scale=statistics.median(m / e for e, m in zip(estimated, measured, strict=True)),
    )
