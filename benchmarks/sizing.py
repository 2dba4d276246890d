"""Students sized for mobile, iot and car on digits and MNIST-1D: chosen sizes, their accuracy
after distillation, and how far the latency estimate behind the sizing can be trusted.

1. For each data set, the default teacher (trained once, cached) and, for each target, the size
   search of ``edgekd size``: the chosen candidate, the line that stops the next size up, and what
   the target's budget alone would allow (no share-of-teacher cap).
2. Each distinct chosen student distilled with ``distill``'s defaults (KD, T=4, alpha=0.1, 30
   epochs) and, for reference, trained from scratch on labels alone; test accuracy of both.
3. Calibration: every candidate of the searches exported, timed with ONNX Runtime on this host
   (1 thread, median after warm-up), estimated with the roofline from this host's own measured
   figures (``measure_host_device``), and compared: Spearman rho and median relative error.

    PYTHONPATH=. python benchmarks/sizing.py [--epochs 30] [--seconds-per-model 0.15]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edgekd.data import load_data
from edgekd.distill.methods import make_method
from edgekd.export import trace_bytes
from edgekd.sizing import build_candidate, size_student_to_budget
from edgekd.sizing.roofline import calibrate_estimator, measure_host_device
from edgekd.targets import load_target
from edgekd.teacher.default import default_teacher
from edgekd.train.loop import (
    TrainConfig,
    accuracy,
    cached_teacher,
    predict_logits,
    train_student,
)

torch.set_num_threads(1)
TARGETS = ("mobile", "iot", "car")
DATASETS = ("digits", "mnist1d")


def distil(data, teacher, candidate, epochs: int, kd: bool, seed: int) -> float:
    torch.manual_seed(seed)  # the same initial weights for KD and scratch
    student = build_candidate(candidate, data)
    logits = predict_logits(teacher, data.train)
    train_student(
        student,
        data.train,
        data.val,
        TrainConfig(epochs=epochs, alpha=0.1 if kd else 1.0, seed=seed),
        method=make_method("kd", temperature=4.0) if kd else None,
        teacher=cached_teacher(logits) if kd else None,
    )
    return accuracy(predict_logits(student, data.test), data.test.y)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def host_ms(path: Path, feed: dict[str, np.ndarray], seconds: float) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(20):
        sess.run(None, feed)
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 50 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seconds-per-model", type=float, default=0.15)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    searches = {}
    print(
        f"{'data':<9}{'target':<8}{'chosen':<20}{'params':>9}{'size KB':>9}"
        f"{'est. ms':>9}{'host ms':>9}{'search s':>9}  next size up breaks | budget alone"
    )
    for name in DATASETS:
        data = load_data(name)
        teacher, info = default_teacher(data)
        teacher.eval()
        for tname in TARGETS:
            target = load_target(tname)
            t0 = time.perf_counter()
            result = size_student_to_budget(target, data, info.params)
            seconds = time.perf_counter() - t0
            alone = size_student_to_budget(
                target,
                data,
                info.params,
                max_share_of_teacher=float("inf"),
                measure_host=False,
                baseline_mb=result.runtime_baseline_mb,
            ).chosen
            c = result.chosen
            stop = "; ".join(x.describe() for x in result.stopped_by) or "-"
            print(
                f"{name:<9}{tname:<8}{c.short_label:<20}{c.params:>9,}{c.size_kb:>9.1f}"
                f"{c.latency_estimate_ms:>9.3f}{c.host_ms:>9.4f}{seconds:>9.1f}  {stop} | "
                f"{alone.short_label} ({alone.params:,})",
                flush=True,
            )
            searches[(name, tname)] = (data, teacher, info, result)

    print(
        f"\n{'data':<9}{'student':<20}{'targets':<18}{'teacher acc':>12}{'KD acc':>18}"
        f"{'scratch acc':>18}   (test accuracy, mean +- sd over {args.seeds} seeds)"
    )
    done: dict[tuple, list[str]] = {}
    for (name, tname), (_, _, _, result) in searches.items():
        done.setdefault((name, result.chosen.short_label), []).append(tname)
    for (name, _), tnames in done.items():
        data, teacher, info, result = searches[(name, tnames[0])]
        cand = result.chosen
        t_acc = accuracy(predict_logits(teacher, data.test), data.test.y)
        kd = [distil(data, teacher, cand, args.epochs, True, s) for s in range(args.seeds)]
        scratch = [distil(data, teacher, cand, args.epochs, False, s) for s in range(args.seeds)]
        print(
            f"{name:<9}{cand.short_label:<20}{','.join(tnames):<18}{t_acc:>12.4f}"
            f"{_mean_sd(kd):>18}{_mean_sd(scratch):>18}",
            flush=True,
        )

    host = measure_host_device(seconds=2.0, threads=1)
    print(
        f"\nhost: {host.name}: fp32 {host.fp32_gflops:.1f} GFLOPS, int8 {host.int8_gops:.1f} "
        f"GOPS, {host.memory_bandwidth_gbs:.1f} GB/s, cache {host.cache_mb:g} MB at "
        f"{host.cache_bandwidth_gbs:.1f} GB/s, op {host.op_overhead_us:.2f} us, "
        f"call {host.call_overhead_us:.2f} us"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths, measured, seen = [], [], set()
        for (name, _), (data, _, _, result) in searches.items():
            for cand in result.candidates:
                if (name, cand.short_label) in seen:
                    continue
                seen.add((name, cand.short_label))
                path = Path(tmp) / f"{name}-{cand.short_label.replace(' ', '-')}.onnx"
                model = build_candidate(cand, data)
                path.write_bytes(trace_bytes(model, data.example_inputs(1), 17))
                paths.append(path)
                measured.append(host_ms(path, data.example_inputs(1), args.seconds_per_model))
        no_cache = dataclasses.replace(host, cache_mb=0.0, cache_bandwidth_gbs=0.0)
        subsets = (("all", None), ("digits", "digits-"), ("mnist1d", "mnist1d-"))
        for device, how in ((host, "with"), (no_cache, "without")):
            print(f"{how} the cache step:")
            for label, keep in subsets:
                idx = [i for i, p in enumerate(paths) if keep is None or p.name.startswith(keep)]
                sub = calibrate_estimator(
                    [paths[i] for i in idx], [measured[i] for i in idx], device
                )
                print(
                    f"  calibration on {label:<8} ({len(idx):>2} students, host "
                    f"{min(sub.measured_ms):.4f}-{max(sub.measured_ms):.4f} ms): Spearman rho "
                    f"{sub.spearman_rho:.3f}, median |est-meas|/meas "
                    f"{sub.median_abs_rel_error:.1%}, median meas/est {sub.scale:.2f}"
                )
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
