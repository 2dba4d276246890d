"""How much does ``measure_latency`` add over a bare loop? Target: p50 within 5%.

Builds a tiny ONNX MLP (40-100-100-10, Gemm + Relu, batch 1) with onnx.helper, opens one
single-threaded ONNX Runtime session, and in each round times the same call two ways, alternating
which goes first (ABBA) so a drift of the machine does not favour either:

* bare:    blocks of ``for _ in range(k): sess.run(None, feed)`` between two perf_counter_ns reads,
           k chosen so a block lasts ~2 ms like a harness sample; the round's value is the median
           per-call time over its blocks;
* harness: ``measure_latency(lambda: sess.run(None, feed))``, its p50.

    PYTHONPATH=. python benchmarks/harness_overhead.py

Runs in about 15 s. On a shared machine single rounds move a lot; the medians across rounds are
the numbers to read.
"""

from __future__ import annotations

import statistics
import time

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


def main() -> None:
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


if __name__ == "__main__":
    main()
