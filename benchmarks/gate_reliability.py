"""Can a CI trust ``edgekd gate``? False failures on an unchanged model, detections of a slower one.

1. Two ONNX MLPs built with onnx.helper: ``base`` (64 -> 4 x 384 -> 10) and ``slower``, the same
   with extra identical 384 x 384 layers, about 1.5x the work (the measured ratio is printed).
2. (d) Start-up: ``edgekd bench base`` (the CLI, a fresh process) against a bare ONNX Runtime loop
   making the same calls in one fresh process, side by side (target: bench <= 3x the bare loop).
3. Two halves: the machine as it is, then with ``--busy`` CPU-bound processes started by this
   script; the load average is printed for both. Each half takes a baseline (``edgekd bench
   base``, 3 fresh processes; the budget is 10 x its p95, met with room, as a shipped target's is
   for a small MLP) and runs ROUNDS rounds, each benchmarking ``base`` and then ``slower`` exactly
   as ``edgekd bench`` does and gating each against the target and the baseline report, as
   ``edgekd gate run.json --baseline base.json`` would (it measures an undecided regression again,
   up to ``--max-seconds``; accuracy_drop is NOT MEASURED, there being no teacher):
   (a) ``base``: a FAIL is a false failure (target: none; INCONCLUSIVE at most 1 in 10);
   (b) ``slower``: a FAIL is a detection (target: all);
   (e) with ``--small``: ``small``, hidden width 403 (1.10x the multiply-adds), gated at a 5%
   threshold: a FAIL is a detection of a small real change.
   Counted for the full gate and for the latency lines (latency_ms, latency_regression) alone,
   with which comparison decided the regression line (processes, or rounds paired in one process;
   ``edgekd.gate.compare.compare_pairs``) and the 1-minute load after each gate.
4. (c) The harness overhead check of ``benchmarks/harness_overhead.py`` (target: within 5%),
   with the harness as bench calls it (per-sample CPU-time reads) and blocks in which this process
   waited for a CPU set aside on both sides.

    PYTHONPATH=. python benchmarks/gate_reliability.py [--rounds 10] [--max-seconds 60]
        [--busy 2] [--threads 1] [--skip-overhead] [--skip-startup] [--halves both|as-is|busy]
        [--small] [--verbose]

About 10 minutes on two busy cores with the defaults (19 minutes at load 11-15, where undecided
rounds spend their --max-seconds); --rounds 5 halves it.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench.harness import measure_latency
from edgekd.bench.runner import BenchSettings
from edgekd.bench.suite import benchmark
from edgekd.gate import gate
from edgekd.targets import load_target

WIDTH, IN, OUT = 384, 64, 10
BASE_BLOCKS, SLOW_BLOCKS = 4, 6
SETTINGS = BenchSettings(processes=3, seconds_per_process=0.15, large_batch=0)

TARGET = """
name = "{name}"
description = "gate reliability check: {threads} thread(s), batch 1"
threads = {threads}
batch_size = 1
precisions = ["fp32"]
opset = 17
providers = ["CPUExecutionProvider"]

[device]
name = "this host"
fp32_gflops = 10.0
int8_gops = 10.0
memory_bandwidth_gbs = 10.0
op_overhead_us = 1.0
call_overhead_us = 1.0

[budget]
latency_ms = {latency_ms}
peak_memory_mb = 4096.0
model_size_kb = 65536.0
params = 100000000
accuracy_drop = 1.0
"""


def mlp(blocks: int, path: Path, width: int = WIDTH) -> Path:
    """IN -> blocks x width -> OUT; every hidden layer the same width x width Gemm + Relu."""
    rng = np.random.default_rng(0)
    sizes = [IN] + [width] * blocks + [OUT]
    nodes, inits, prev = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", OUT])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def write_target(folder: Path, latency_ms: float, threads: int = 1) -> Path:
    path = folder / "reliability.toml"
    path.write_text(TARGET.format(name="reliability", latency_ms=latency_ms, threads=threads))
    return path


LATENCY_LINES = ("latency_ms", "latency_regression")
# (e), with --small: hidden width 403 instead of 384, 1.10x the multiply-adds, gated at 5%
SMALL_WIDTH = 403
THRESHOLDS = {"base": 0.10, "slower": 0.10, "small": 0.05}
WHAT = {"base": "(a) unchanged", "slower": "(b) 1.5x slower", "small": "(e) ~1.1x at 5%"}


def verdicts(report, target, baseline, max_seconds: float, threshold: float = 0.10) -> dict:
    """The full gate's verdict (every line; accuracy_drop is NOT MEASURED without a teacher),
    the latency lines' verdicts, and theirs combined as the gate combines lines. The gate
    measures an undecided regression again for up to ``max_seconds``."""
    result = gate(report, target, baseline=baseline, max_seconds=max_seconds, threshold=threshold)
    lines = {line.name: str(line.verdict) for line in result.lines if line.name in LATENCY_LINES}
    latency = set(lines.values())
    combined = next((v for v in ("FAIL", "INCONCLUSIVE") if v in latency), "PASS")
    reasons = {line.name: line.reason for line in result.lines if line.name in LATENCY_LINES}
    how = reasons.get("latency_regression", "")
    decided_by = "paired" if "paired over" in how else "processes"
    return lines | {"latency": combined, "full": str(result.verdict), "by": decided_by,
                    "reasons": reasons}  # fmt: skip


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def start_load(n: int) -> list[subprocess.Popen]:
    """``n`` CPU-bound processes (a busy loop each): the deliberately loaded half."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
        p.wait()


def bench_startup(model: str, pairs: int = 3) -> None:
    """(d) ``edgekd bench`` wall time against bare loops of the same calls
    (``benchmarks/harness_overhead.py``, where it lives)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from harness_overhead import bench_startup as startup

    startup(model, IN, pairs)


def reliability_half(folder: Path, models: dict[str, str], args, label: str) -> None:
    """(a), (b) and (e) on this machine as it is now: ``args.rounds`` rounds of each model."""
    base = models["base"]
    provisional = write_target(folder, 1000.0, args.threads)
    baseline = benchmark([base], provisional, settings=SETTINGS, processes=3)
    p95 = baseline.models[0].latency_ms["p95"]
    # A budget met with room (as a shipped target's is for a small MLP): the full gate's
    # decision then rests on the regression line, which is what this measures.
    target = load_target(write_target(folder, round(10 * p95, 6), args.threads))
    load_before = load()
    print(f"\n== {label}: load {load_before}; baseline p50 "
          f"{baseline.models[0].latency_ms['p50'] * 1e3:.1f} us, process medians "
          f"{[round(v * 1e3, 1) for v in baseline.models[0].latency_ms['process_p50']]} us")
    print(f"{'round':>5}  {'model':<7} {'p50 us':>7} {'drift':>6} {'busy':>5}  "
          f"{'latency_ms':<12} {'latency_regression':<18} {'full gate':<12} {'gate s':>6}")
    counts: dict[str, collections.Counter] = {name: collections.Counter() for name in models}
    ratios: dict[str, list[float]] = {name: [] for name in models if name != "base"}
    for r in range(args.rounds):
        p50 = {}
        for name, spec in models.items():
            report = benchmark([spec], target, settings=SETTINGS, processes=3)
            m = report.models[0]
            p50[name] = m.latency_ms["p50"]
            t0 = time.perf_counter()
            v = verdicts(report, target, baseline, args.max_seconds, THRESHOLDS[name])
            took = time.perf_counter() - t0
            for line in ("latency", "full"):
                counts[name][(line, v[line])] += 1
            print(f"{r:>5}  {name:<7} {m.latency_ms['p50'] * 1e3:>7.1f} "
                  f"{m.latency_ms['process_spread']:>6.0%} "
                  f"{m.latency_ms['descheduled_fraction'] or 0:>5.0%}  {v['latency_ms']:<12} "
                  f"{v['latency_regression']:<18} {v['full']:<12} {took:>6.1f} {v['by']:<9} "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if args.verbose or v["latency"] == "INCONCLUSIVE":
                for line, why in v["reasons"].items():
                    print(f"         {line}: {why}")
        for name in ratios:
            ratios[name].append(p50[name] / p50["base"])
    n = args.rounds
    for name, values in ratios.items():
        print(f"{label}: {name} / base p50, same round: median {statistics.median(values):.2f}x")
    print(f"load {load_before} before, {load()} after")
    print(f"{'':<28} {'PASS':>5} {'FAIL':>5} {'INCONCLUSIVE':>13}")
    for name, what in WHAT.items():
        if name not in models:
            continue
        for line, shown in (("full", "full gate"), ("latency", "latency lines")):
            c = counts[name]
            print(f"{what:<16} {shown:<13} {c[(line, 'PASS')]:>5} {c[(line, 'FAIL')]:>5} "
                  f"{c[(line, 'INCONCLUSIVE')]:>13}")
    print(f"(a) false failures: {counts['base'][('full', 'FAIL')]}/{n} (target 0); "
          f"(b) detections: {counts['slower'][('full', 'FAIL')]}/{n} (target {n})")
    if "small" in counts:
        print(f"(e) detections of the ~1.1x change at a 5% threshold: "
              f"{counts['small'][('full', 'FAIL')]}/{n}")


def harness_overhead(rounds: int = 10, seconds: float = 0.5) -> None:
    """(c) ``measure_latency`` as bench calls it, against a bare ``sess.run`` loop, same process.

    As bench calls it: per-sample CPU-time reads and bench's sample length (``sample_min_s``).

    ``benchmarks/harness_overhead.py``'s model, session and ABBA rounds; here both sides also read
    the thread's CPU time per block/sample, so blocks in which this process waited for a CPU
    (a neighbour's work, not either side's overhead) are set aside on both sides alike.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from harness_overhead import SIZES, open_session, tiny_mlp

    from edgekd.bench.contention import MIN_CPU_SHARE

    sess = open_session(tiny_mlp())
    feed = {"x": np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)}
    # Bare blocks as long as the harness's samples: on a busy host a longer block is more often
    # cut by the scheduler, which would be a difference in block length, not in overhead.
    per_block = measure_latency(
        lambda: sess.run(None, feed), sample_min_s=SETTINGS.sample_min_s
    ).loops

    def bare() -> tuple[float, float]:
        values, clean = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            for _ in range(per_block):
                sess.run(None, feed)
            w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            values.append((w1 - w0) / per_block / 1e3)
            if (c1 - c0) / (w1 - w0) >= MIN_CPU_SHARE:
                clean.append(values[-1])
        return statistics.median(values), statistics.median(clean or [math.nan])

    def harness() -> tuple[float, float]:
        s = measure_latency(
            lambda: sess.run(None, feed),
            min_time_s=seconds,
            sample_min_s=SETTINGS.sample_min_s,
            cpu_timer=time.thread_time_ns,
        )
        shares = s.metadata["harness"]["cpu_share"]
        clean = [v for v, c in zip(s.samples_ms, shares, strict=True) if c >= MIN_CPU_SHARE]
        return statistics.median(s.samples_ms) * 1e3, statistics.median(clean or [math.nan]) * 1e3

    print(f"\n(c) harness overhead: MLP {SIZES}, 1 thread, bare blocks of {per_block} calls")
    print(f"{'round':>5} {'bare us':>8} {'harness':>8} {'ratio':>6}   clean only: "
          f"{'bare':>6} {'harness':>8} {'ratio':>6}")  # fmt: skip
    rows = []
    for r in range(rounds):
        if r % 2 == 0:
            b, h = bare(), harness()
        else:
            h, b = harness(), bare()
        rows.append((b, h))
        print(f"{r:>5} {b[0]:>8.3f} {h[0]:>8.3f} {h[0] / b[0]:>6.3f}   {'':>12}"
              f"{b[1]:>6.3f} {h[1]:>8.3f} {h[1] / b[1]:>6.3f}")  # fmt: skip
    all_ratio = statistics.median(h[0] / b[0] for b, h in rows)
    pairs = [(b[1], h[1]) for b, h in rows if not math.isnan(b[1] + h[1])]
    clean_ratio = statistics.median(h / b for b, h in pairs) if pairs else math.nan
    verdict = "within" if abs(clean_ratio - 1) <= 0.05 else "NOT within"
    print(f"harness p50 / bare median, median over rounds: all samples {all_ratio:.3f}, "
          f"clean samples {clean_ratio:.3f} ({verdict} the 5% target)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per half (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="gate --max-seconds")
    parser.add_argument("--busy", type=int, default=2, help="busy processes, loaded half")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--halves", choices=("both", "as-is", "busy"), default="both",
                        help="which halves to run (default both)")
    parser.add_argument("--verbose", action="store_true", help="print every latency reason")
    parser.add_argument("--small", action="store_true",
                        help="(e) also a ~1.1x slower model gated at a 5%% threshold")
    args = parser.parse_args()
    t_start = time.perf_counter()
    # SIGTERM ends the run through the finally below, so the busy processes stop with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="edgekd-reliability-") as tmp:
        folder = Path(tmp)
        base = str(mlp(BASE_BLOCKS, folder / "base.onnx"))
        slow_dir = folder / "slower"
        slow_dir.mkdir()
        # Same file name, so the slower model is "base" to the baseline comparison.
        slow = str(mlp(SLOW_BLOCKS, slow_dir / "base.onnx"))
        models = {"base": base, "slower": slow}
        if args.small:
            (folder / "small").mkdir()
            models["small"] = str(mlp(BASE_BLOCKS, folder / "small" / "base.onnx", SMALL_WIDTH))
        if not args.skip_startup:
            bench_startup(base)
        if args.halves in ("both", "as-is"):
            reliability_half(folder, models, args, "as the machine is")
        if args.halves in ("both", "busy"):
            busy = start_load(args.busy)
            try:
                time.sleep(5)  # let the load average see them
                reliability_half(folder, models, args, f"with {args.busy} busy processes added")
            finally:
                stop_load(busy)
    print(f"reliability rounds took {time.perf_counter() - t_start:.0f} s")
    if not args.skip_overhead:
        harness_overhead()
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
