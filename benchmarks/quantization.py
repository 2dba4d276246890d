"""Every quantization variant side by side: size, latency p50/p95, accuracy, for three models.

    PYTHONPATH=. python benchmarks/quantization.py [--threads 1] [--min-time 0.3]

Models (all trained here, briefly, with plain cross-entropy; nothing is downloaded):
  digits-cnn     the default digits student, build_student("cnn", (1, 8, 8), 10, 2.0, 2),
                 10 epochs on scikit-learn digits
  mlp-784-1200   784-1200-1200-10 MLP (the shape of Hinton et al.'s MNIST teacher), 6 epochs on
                 scikit-learn digits upsampled to 28x28 (784 features): real data, weight-heavy
  mlp-40-100     40-100-100-10 MLP, 10 epochs on MNIST-1D (40 features): a tiny model, where int8
                 is expected to lose to fp32 (per-call quantization overhead > the GEMM saved)

Each model goes through edgekd's own ``select_quantization`` with the full grid (dynamic,
static QDQ and QOperator, per-channel and per-tensor, MinMax / Entropy / Percentile, fp16):
accuracy is on the test split, latency at batch 1 with ``--threads`` ONNX Runtime threads
(default 1: on a shared machine a second thread mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import DataBundle, Split, load_data
from edgekd.export import export_onnx
from edgekd.hostinfo import host_info
from edgekd.quantize.select import QuantSearch, format_variants, select_quantization
from edgekd.students import build_student
from edgekd.targets import load_target
from edgekd.train.loop import TrainConfig, train_student


def mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def upsample_28(split: Split) -> Split:
    x = torch.from_numpy(split.inputs["x"])
    big = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return Split({"x": big.reshape(len(x), 784).numpy()}, split.y)


def digits_784() -> DataBundle:
    d = load_data("digits")
    return dataclasses.replace(
        d,
        name="digits-28x28",
        train=upsample_28(d.train),
        val=upsample_28(d.val),
        test=upsample_28(d.test),
        input_kind="vector",
    )


def models() -> list[tuple[str, nn.Module, DataBundle, int]]:
    digits = load_data("digits")
    torch.manual_seed(0)
    return [
        ("digits-cnn", build_student("cnn", (1, 8, 8), 10, 2.0, 2), digits, 10),
        ("mlp-784-1200", mlp([784, 1200, 1200, 10]), digits_784(), 6),
        ("mlp-40-100", mlp([40, 100, 100, 10]), load_data("mnist1d"), 10),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per variant")
    args = parser.parse_args()
    torch.set_num_threads(2)
    host = host_info()
    print(
        f"host: {host['cpu_model']}, {host['cores']} cores, int8 support: {host['int8_support']}; "
        f"onnxruntime {host['onnxruntime']}, torch {host['torch']}; ORT threads {args.threads}"
    )
    # The mobile budget (2-point drop), with fp16 added so that every mode is measured.
    target = dataclasses.replace(
        load_target("mobile"), precisions=("fp32", "fp16", "int8"), batch_size=1
    )
    search = QuantSearch(
        calibrations=("minmax", "entropy", "percentile"),
        latency_min_time_s=args.min_time,
        threads=args.threads,
    )
    summary = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, data, epochs in models():
            t = time.perf_counter()
            train_student(
                model, data.train, data.val, TrainConfig(epochs=epochs, alpha=1.0), description=name
            )
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(model, path, data.example_inputs(1), target.opset, data.test.inputs)
            sel = select_quantization(
                path, target, data.train.inputs, data.test, Path(tmp) / name, search=search
            )
            print(
                f"\n== {name} ({sum(p.numel() for p in model.parameters()):,} parameters, "
                f"{data.name} test split n={data.test.n}, {time.perf_counter() - t:.0f} s)"
            )
            print(format_variants(sel))
            for line in sel.warnings:
                if "slower than fp32" not in line:  # the table shows those
                    print(f"  - {line}")
            summary.append((name, sel))
    print("\n== summary (p50 at batch 1; speed-up = fp32 p50 / variant p50)")
    print(
        f"  {'model':14s} {'fp32 us':>8s} {'best int8':40s} {'us':>7s} {'speed-up':>8s} "
        f"{'int8 slower':>11s}  chosen"
    )
    for name, sel in summary:
        int8 = [v for v in sel.variants if v.precision == "int8" and v.error is None]
        best = min(int8, key=lambda v: v.latency_ms["p50"])
        slower = sum(v.latency_ms["p50"] > sel.fp32.latency_ms["p50"] for v in int8)
        print(
            f"  {name:14s} {sel.fp32.p50_us:8.1f} {best.name:40s} {best.p50_us:7.1f} "
            f"{sel.fp32.p50_us / best.p50_us:7.2f}x {slower:>5d} of {len(int8):<3d}  {sel.chosen}"
        )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
