"""Every quantization variant side by side: size, latency p50/p95, accuracy, for three models;
then the chosen variant against fp32 in the benchmark stage, over cold runs.

    PYTHONPATH=. python benchmarks/quantization.py [--threads 1] [--min-time 0.3] [--runs 5]
        [--models digits-cnn,mlp-784-1200] [--skip-grid] [--bench-seconds 0.5]

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

Cold runs (``--runs``, default 5): what ``edgekd distill`` does after export, each run in a fresh
process: ``select_quantization`` with distill's own search (``QuantSearch.timed_like_bench`` of
``--bench-seconds``: MinMax calibration, dynamic/QDQ/QOperator x per-channel/per-tensor, ranked
at one thread), then distill's benchmark stage (``measure_models``: fresh processes, the target's
threads, ``--bench-seconds`` per model) on fp32 and the chosen variant. The column "chosen vs
fp32 (bench)" is the chosen variant's benchmark p50 over fp32's in that run; "slower" counts runs
where its interval lay wholly above fp32's, where distill ships fp32 instead. The load average is
printed with every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import DataBundle, Split, load_data
from edgekd.export import export_onnx
from edgekd.hostinfo import host_info
from edgekd.quantize.select import QuantSearch, format_variants, select_quantization
from edgekd.quantize.variants import slower_than_fp32
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


def mobile_batch1():
    """The mobile target (2-point accuracy budget, 4 threads, capped at the cores), batch 1."""
    return dataclasses.replace(load_target("mobile"), batch_size=1)


def grid_table(name, model, data, path: Path, target, search, work: Path):
    sel = select_quantization(path, target, data.train.inputs, data.test, work, search=search)
    print(
        f"\n== {name} ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{data.name} test split n={data.test.n})"
    )
    print(format_variants(sel))
    for line in sel.warnings:
        if "slower than fp32" not in line:  # the table shows those
            print(f"  - {line}")
    return sel


def print_grid_summary(summary) -> None:
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


def save_case(folder: Path, data: DataBundle) -> None:
    """What a cold run needs besides model.onnx: calibration, validation and test arrays."""
    np.savez(
        folder / "data.npz",
        train_x=data.train.inputs["x"],
        val_x=data.val.inputs["x"],
        val_y=data.val.y,
        test_x=data.test.inputs["x"],
        test_y=data.test.y,
    )


def one_run(folder: Path, bench_seconds: float) -> dict:
    """One cold run (in its own process): distill's selection, then distill's benchmark stage."""
    from edgekd.bench.runner import BenchSettings, ModelRef, measure_models

    with np.load(folder / "data.npz") as z:
        train, val = {"x": z["train_x"]}, Split({"x": z["val_x"]}, z["val_y"])
        test = Split({"x": z["test_x"]}, z["test_y"])
    target, load = mobile_batch1(), os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        search = QuantSearch.timed_like_bench(bench_seconds)
        sel = select_quantization(folder / "model.onnx", target, train, val, work, search=search)
        chosen, fp32 = sel.chosen_variant, sel.fp32
        out = {
            "chosen": sel.chosen,
            "claimed": fp32.latency_ms["p50"] / chosen.latency_ms["p50"],
            "claimed_target": fp32.latency_ms_target["p50"] / chosen.latency_ms_target["p50"],
            "select_s": time.perf_counter() - t0,
            "load": [load, os.getloadavg()[0]],
            "bench_ratio": 1.0,
            "slower": False,
        }
        if chosen is not fp32:
            refs = [
                ModelRef("student-onnx", fp32.path, "ort_cpu", "fp32"),
                ModelRef("student-int8", chosen.path, "ort_cpu", "int8"),
            ]
            settings = BenchSettings(processes=3, seconds_per_process=bench_seconds / 3)
            (b32, b8), _ = measure_models(refs, test, target.threads, 1, settings)
            out["bench_ratio"] = b8.latency_ms["p50"] / b32.latency_ms["p50"]
            out["slower"] = slower_than_fp32(sel.chosen, b8.latency_ms, b32.latency_ms) is not None
    out["load"][1] = os.getloadavg()[0]
    return out


def cold_runs(cases: dict[str, Path], runs: int, bench_seconds: float) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {name: [] for name in cases}
    cmd = [sys.executable, __file__, "--bench-seconds", str(bench_seconds), "--one-run"]
    for r in range(runs):
        for name, folder in cases.items():
            done = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            got[name].append(run)
            print(
                f"  run {r + 1} {name:14s} chosen {run['chosen']:34s} claimed "
                f"{run['claimed']:5.2f}x (1 thread), {run['claimed_target']:5.2f}x (target "
                f"threads); bench chosen/fp32 "
                f"{run['bench_ratio']:5.2f}{' SLOWER' if run['slower'] else ''}; "
                f"load {run['load'][0]:.1f}-{run['load'][1]:.1f}",
                flush=True,
            )
    return got


def print_cold_summary(got: dict[str, list[dict]]) -> None:
    print(
        "\n== cold runs: distill's selection, then its benchmark stage (target threads); "
        "chosen vs fp32 = chosen p50 / fp32 p50 in the benchmark"
    )
    print(
        f"  {'model':14s} {'runs':>4s} {'claimed speed-up':>18s} {'chosen vs fp32 (bench)':>24s} "
        f"{'slower':>6s}  chosen"
    )
    for name, runs in got.items():
        claimed = [r["claimed"] for r in runs]
        ratio = [r["bench_ratio"] for r in runs]
        chosen = sorted({r["chosen"] for r in runs})
        counts = ", ".join(f"{c} x{sum(r['chosen'] == c for r in runs)}" for c in chosen)
        print(
            f"  {name:14s} {len(runs):4d} {min(claimed):7.2f}-{max(claimed):.2f}x "
            f"{min(ratio):15.2f}-{max(ratio):.2f}x {sum(r['slower'] for r in runs):6d}  {counts}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per variant")
    parser.add_argument("--runs", type=int, default=5, help="cold runs (0: none)")
    parser.add_argument("--bench-seconds", type=float, default=0.5, help="as distill's")
    parser.add_argument("--models", default="digits-cnn,mlp-784-1200,mlp-40-100")
    parser.add_argument("--skip-grid", action="store_true", help="only the cold runs")
    parser.add_argument("--one-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        print(json.dumps(one_run(args.one_run, args.bench_seconds)))
        return
    torch.set_num_threads(2)
    host = host_info()
    print(
        f"host: {host['cpu_model']}, {host['cores']} cores, int8 support: {host['int8_support']}; "
        f"onnxruntime {host['onnxruntime']}, torch {host['torch']}; ORT threads {args.threads}; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    # The mobile budget (2-point drop), with fp16 added so that every mode is measured.
    target = dataclasses.replace(mobile_batch1(), precisions=("fp32", "fp16", "int8"))
    search = QuantSearch(
        calibrations=("minmax", "entropy", "percentile"),
        latency_min_time_s=args.min_time,
        threads=args.threads,
    )
    wanted = args.models.split(",")
    summary, cases = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, data, epochs in models():
            if name not in wanted:
                continue
            train_student(
                model, data.train, data.val, TrainConfig(epochs=epochs, alpha=1.0), description=name
            )
            folder = Path(tmp) / name
            folder.mkdir()
            path = folder / "model.onnx"
            export_onnx(model, path, data.example_inputs(1), target.opset, data.test.inputs)
            save_case(folder, data)
            cases[name] = folder
            if not args.skip_grid:
                sel = grid_table(name, model, data, path, target, search, folder / "grid")
                summary.append((name, sel))
        if summary:
            print_grid_summary(summary)
        if args.runs:
            print_cold_summary(cold_runs(cases, args.runs, args.bench_seconds))
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
