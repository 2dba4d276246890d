"""How well does the roofline estimate rank and size real latencies on this host?

Builds eight small MLPs and CNNs of increasing size, exports them to ONNX, measures each with ONNX
Runtime on one CPU thread (warm-up, then the median of many runs), measures this host's roofline
figures with ``measure_host_device``, estimates each model on them, and prints one row per model
plus Spearman rho and the median relative error. Runs in well under a minute on two cores.

    PYTHONPATH=. python benchmarks/estimator_calibration.py [--seconds-per-model 0.8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgekd.sizing.onnx_cost import analyze_onnx
from edgekd.sizing.roofline import calibrate_estimator, estimate_latency, measure_host_device

torch.set_num_threads(1)


def mlp(width: int, depth: int) -> tuple[nn.Module, tuple[int, ...]]:
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 64
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers), (1, 64)


def cnn(channels: int, size: int) -> tuple[nn.Module, tuple[int, ...]]:
    c = channels
    model = nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 10),
    )
    return model, (1, 3, size, size)


MODELS = {
    "mlp-w32": lambda: mlp(32, 2),
    "mlp-w128": lambda: mlp(128, 2),
    "cnn-c8-16px": lambda: cnn(8, 16),
    "mlp-w512": lambda: mlp(512, 3),
    "cnn-c16-32px": lambda: cnn(16, 32),
    "mlp-w1024": lambda: mlp(1024, 4),
    "cnn-c32-32px": lambda: cnn(32, 32),
    "cnn-c64-48px": lambda: cnn(64, 48),
}


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (x,), path, dynamo=False, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
        )


def measure_ms(path: Path, shape: tuple[int, ...], seconds: float) -> float:
    """Median latency of one ORT call (1 thread, default graph optimizations) after warm-up."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(20):  # warm-up: allocator arenas, caches, branch predictors
        sess.run(None, feeds)
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 50 or time.perf_counter() < deadline:
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-model", type=float, default=0.8)
    parser.add_argument("--host-seconds", type=float, default=2.0)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths, measured, shapes = [], [], []
        for name, build in MODELS.items():
            model, shape = build()
            path = Path(tmp) / f"{name}.onnx"
            export(model, shape, path)
            paths.append(path)
            shapes.append(shape)
            measured.append(measure_ms(path, shape, args.seconds_per_model))
        host = measure_host_device(seconds=args.host_seconds, threads=1)
        print(f"host: {host.name}")
        print(
            f"  fp32 {host.fp32_gflops:.1f} GFLOPS, int8 {host.int8_gops:.1f} GOPS, "
            f"{host.memory_bandwidth_gbs:.1f} GB/s, cache {host.cache_mb:g} MB at "
            f"{host.cache_bandwidth_gbs:.1f} GB/s, op {host.op_overhead_us:.2f} us, "
            f"call {host.call_overhead_us:.2f} us"
        )
        header = (
            f"{'model':<14}{'MACs':>12}{'params':>10}{'peak act KB':>13}"
            f"{'est ms':>10}{'meas ms':>10}{'meas/est':>10}{'nodes':>7}"
        )
        print(header)
        print("-" * len(header))
        for name, path, ms in zip(MODELS, paths, measured, strict=True):
            cost = analyze_onnx(path)
            est = estimate_latency(cost, host)
            print(
                f"{name:<14}{cost.macs:>12,}{cost.params:>10,}"
                f"{cost.peak_activation_bytes / 1024:>13.1f}{est.total_ms:>10.4f}{ms:>10.4f}"
                f"{ms / est.total_ms:>10.2f}{len(est.nodes):>7}"
            )
        cal = calibrate_estimator(paths, measured, host)
    print(
        f"Spearman rho = {cal.spearman_rho:.3f} (p = {cal.spearman_p:.2g}), "
        f"median |est - meas| / meas = {cal.median_abs_rel_error:.1%}, "
        f"median meas/est = {cal.scale:.2f}"
    )
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
