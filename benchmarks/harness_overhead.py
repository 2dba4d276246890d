"""How much does edgekd add over a bare ONNX Runtime loop? Two questions, one script.

1. Start-up (issue 17: ``edgekd bench`` wall time at most 3x a bare loop): ``edgekd bench
   MODEL`` (the CLI, a fresh process; the 64 -> 4 x 384 -> 10 MLP of
   ``benchmarks/gate_reliability.py``) against bare loops making the same calls (each bench
   process's latency samples x loops), timed side by side in one run: in one fresh process, and
   split over as many fresh processes as the bench used. ``--other ROOT`` also times the
   ``edgekd`` found under ROOT (an older checkout) in the same rounds, alternating, so that two
   releases are compared at the same load. CPU seconds (user + system, children included) are
   printed beside wall time; with the target's 2 threads a bare loop's second ONNX Runtime thread
   spins while it waits, so its CPU time exceeds its wall time: compare CPU within a column.
2. Harness overhead: does ``measure_latency`` add to a call? Target: p50 within 5%.

Builds a tiny ONNX MLP (40-100-100-10, Gemm + Relu, batch 1) with onnx.helper, opens one
single-threaded ONNX Runtime session, and in each round times the same call two ways, alternating
which goes first (ABBA) so a drift of the machine does not favour either:

* bare:    blocks of ``for _ in range(k): sess.run(None, feed)`` between two perf_counter_ns reads,
           k chosen so a block lasts ~2 ms like a harness sample; the round's value is the median
           per-call time over its blocks;
* harness: ``measure_latency(lambda: sess.run(None, feed))``, its p50.

    PYTHONPATH=. python benchmarks/harness_overhead.py [--pairs 5] [--other /path/to/old/checkout]
        [--skip-startup] [--skip-harness]

The start-up part takes about 5 s a pair on an idle 2-core machine; the harness part about
15 s. On a shared machine single rounds move a lot; the medians across rounds are the numbers
to read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench.harness import measure_latency

ROUNDS = 6
SECONDS_PER_SIDE = 1.0
BLOCK_S = 0.002  # the harness's default sample_min_s: blocks and samples of the same length
SIZES = (40, 100, 100, 10)


def tiny_mlp() -> bytes:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:], strict=False)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < len(SIZES) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZES[0]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, SIZES[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def open_session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def bare_median_us(sess: ort.InferenceSession, feed: dict, calls_per_block: int) -> float:
    per_call = []
    deadline = time.perf_counter() + SECONDS_PER_SIDE
    while time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        for _ in range(calls_per_block):
            sess.run(None, feed)
        per_call.append((time.perf_counter_ns() - t0) / calls_per_block / 1e3)
    return statistics.median(per_call)


def harness_p50_us(sess: ort.InferenceSession, feed: dict) -> float:
    samples = measure_latency(
        lambda: sess.run(None, feed), min_time_s=SECONDS_PER_SIDE, sample_min_s=BLOCK_S
    )
    return samples.summary().p50 * 1e3


_BARE = (
    "import sys, numpy as np, onnxruntime as ort\n"
    "o = ort.SessionOptions()\n"
    "o.intra_op_num_threads = int(sys.argv[3])\n"
    "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
    "x = {s.get_inputs()[0].name: np.zeros((1, int(sys.argv[4])), np.float32)}\n"
    "for _ in range(int(sys.argv[2])): s.run(None, x)\n"
)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process's waited-for children and their children:
    less moved by a busy machine than wall time, which mostly adds waiting."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _bare_s(model: str, calls: list[int], threads: int, width: int) -> tuple[float, float]:
    """Wall and CPU time of fresh processes each making ``calls[i]`` bare ``sess.run`` calls."""
    t0, c0 = time.perf_counter(), _cpu_s()
    for n in calls:
        subprocess.run([sys.executable, "-c", _BARE, model, str(n), str(threads), str(width)],
                       check=True)  # fmt: skip
    return time.perf_counter() - t0, _cpu_s() - c0


def _bench_s(model: str, out: Path, root: str | None) -> tuple[float, float, list[int], int]:
    """``edgekd bench MODEL`` from ``root`` (None: this checkout): wall s, CPU s, calls, threads."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = root
    t0, c0 = time.perf_counter(), _cpu_s()
    subprocess.run([sys.executable, "-m", "edgekd", "bench", model, "--target", "iot", "--out",
                    str(out)], check=True, capture_output=True, env=env)  # fmt: skip
    took, cpu = time.perf_counter() - t0, _cpu_s() - c0
    m = json.loads(out.read_text())["models"][0]
    calls = [len(p["samples_ms"]) * p.get("loops", 1) for p in m["latency_processes"]]
    return took, cpu, calls, m["threads"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def bench_startup(model: str, width: int, pairs: int = 5, other: str | None = None) -> None:
    """``edgekd bench`` wall time against bare loops of the same calls, side by side."""
    print(f"\nedgekd bench vs bare ONNX Runtime loops making the same calls; load {load()}")
    head = f"{'pair':>4} {'bench s':>8} {'calls':>7} {'bare 1 proc s':>13} {'ratio':>6} "
    head += f"{'bare k procs s':>14} {'ratio':>6}"
    head += f" {'CPU s':>6} {'bare':>5} {'ratio':>6}"
    print(head + (f" {'other s':>8} {'ratio':>6} {'other/this':>10} {'CPU':>5}" if other else ""))
    one, many, old, vs, cpu_one, cpu_vs = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="edgekd-startup-") as tmp:
        out = Path(tmp) / "r.json"
        for i in range(pairs):
            other_s = other_cpu = None
            if other and i % 2 == 1:  # ABBA: neither release always runs first
                other_s, other_cpu = _bench_s(model, out, other)[:2]
            bench_s, bench_cpu, calls, threads = _bench_s(model, out, None)
            if other and i % 2 == 0:
                other_s, other_cpu = _bench_s(model, out, other)[:2]
            bare_one, bare_cpu = _bare_s(model, [sum(calls)], threads, width)
            bare_many = _bare_s(model, calls, threads, width)[0]
            one.append(bench_s / bare_one)
            many.append(bench_s / bare_many)
            cpu_one.append(bench_cpu / bare_cpu)
            row = (f"{i:>4} {bench_s:>8.2f} {sum(calls):>7} {bare_one:>13.2f} {one[-1]:>6.2f} "
                   f"{bare_many:>14.2f} {many[-1]:>6.2f} {bench_cpu:>6.2f} {bare_cpu:>5.2f} "
                   f"{cpu_one[-1]:>6.2f}")  # fmt: skip
            if other_s is not None and other_cpu is not None:
                old.append(other_s / bare_one)
                vs.append(other_s / bench_s)
                cpu_vs.append(other_cpu / bench_cpu)
                row += f" {other_s:>8.2f} {old[-1]:>6.2f} {vs[-1]:>10.2f} {cpu_vs[-1]:>5.2f}"
            print(row, flush=True)
    print(f"edgekd bench / bare loop of the same calls: median {statistics.median(one):.2f}x "
          f"against one process (target <= 3x), {statistics.median(many):.2f}x against one "
          f"process per bench process; CPU time {statistics.median(cpu_one):.2f}x one bare "
          f"process's; load {load()}")  # fmt: skip
    if other:
        print(f"{other}: median {statistics.median(old):.2f}x one bare process; it took "
              f"{statistics.median(vs):.2f}x this checkout's wall time and "
              f"{statistics.median(cpu_vs):.2f}x its CPU time (medians of pairs)")


def harness_overhead() -> None:
    """``measure_latency``'s p50 against a bare loop's median, same session, ABBA rounds."""
    sess = open_session(tiny_mlp())
    feed = {"x": np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)}
    for _ in range(1000):  # warm-up for the bare side (the harness does its own)
        sess.run(None, feed)
    t0 = time.perf_counter_ns()
    for _ in range(1000):
        sess.run(None, feed)
    calls_per_block = max(1, round(BLOCK_S * 1e9 / ((time.perf_counter_ns() - t0) / 1000)))

    print(f"onnxruntime {ort.__version__}, MLP {SIZES}, 1 thread; bare blocks of {calls_per_block}")
    print(f"{'round':>5} {'bare us':>9} {'harness us':>11} {'ratio':>7}")
    bare, harness = [], []
    for r in range(ROUNDS):
        if r % 2 == 0:
            b, h = bare_median_us(sess, feed, calls_per_block), harness_p50_us(sess, feed)
        else:
            h, b = harness_p50_us(sess, feed), bare_median_us(sess, feed, calls_per_block)
        bare.append(b)
        harness.append(h)
        print(f"{r:>5} {b:>9.3f} {h:>11.3f} {h / b:>7.3f}")
    b_med, h_med = statistics.median(bare), statistics.median(harness)
    print(f"{'min':>5} {min(bare):>9.3f} {min(harness):>11.3f} {min(harness) / min(bare):>7.3f}")
    print(f"{'med':>5} {b_med:>9.3f} {h_med:>11.3f} {h_med / b_med:>7.3f}")
    verdict = "within" if abs(h_med / b_med - 1) <= 0.05 else "NOT within"
    print(f"harness p50 / bare loop median = {h_med / b_med:.3f} ({verdict} the 5% target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="start-up rounds (default 5)")
    parser.add_argument("--other", help="an older checkout whose edgekd to time alongside")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--skip-harness", action="store_true")
    args = parser.parse_args()
    if not args.skip_startup:
        sys.path.insert(0, str(Path(__file__).parent))
        from gate_reliability import BASE_BLOCKS, IN, mlp

        with tempfile.TemporaryDirectory(prefix="edgekd-overhead-") as tmp:
            model = str(mlp(BASE_BLOCKS, Path(tmp) / "base.onnx"))
            bench_startup(model, IN, args.pairs, args.other)
    if not args.skip_harness:
        harness_overhead()


if __name__ == "__main__":
    main()
