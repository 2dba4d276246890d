"""Benchmark one model: latency, peak memory, size, accuracy and fidelity on the test split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgekd.bench.accuracy import classification_metrics, predict
from edgekd.bench.harness import measure_latency
from edgekd.bench.memory import peak_rss_mb
from edgekd.data import Split
from edgekd.report import ModelResult
from edgekd.runtimes import get_runtime
from edgekd.runtimes.ort_cpu import host_threads


@dataclass(frozen=True)
class ModelRef:
    """A model to benchmark: a file (ONNX or edgekd safetensors checkpoint) and how to run it."""

    name: str
    path: str
    runtime: str  # registry key, e.g. "ort_cpu", "torch_cpu"
    precision: str = "fp32"
    role: str = "student"
    params: int = 0


def bench_model(
    ref: ModelRef,
    test: Split,
    threads: int,
    batch_size: int,
    teacher_logits: np.ndarray | None = None,
    min_time_s: float = 0.5,
) -> tuple[ModelResult, np.ndarray]:
    runtime = get_runtime(ref.runtime)
    session = runtime.open(ref.path, threads)
    feed = {k: v[:batch_size] for k, v in test.inputs.items()}
    samples = measure_latency(
        lambda: session.run(feed),
        min_time_s=min_time_s,
        metadata={"runtime": ref.runtime, "provider": session.provider, "threads": threads},
    )
    summary = samples.summary()
    logits = predict(session, test)
    metrics = classification_metrics(logits, test.y, teacher_logits)
    memory = peak_rss_mb(ref.runtime, ref.path, feed, host_threads(threads))
    notes = [summary.warning] if summary.warning else []
    result = ModelResult(
        name=ref.name,
        path=ref.path,
        format="onnx" if ref.path.endswith(".onnx") else "torch",
        precision=ref.precision,
        provider=session.provider,
        params=ref.params,
        size_bytes=os.path.getsize(ref.path),
        latency_ms=summary.to_dict(),
        peak_rss_mb=memory,
        accuracy=metrics["accuracy"],
        agreement_with_teacher=metrics["agreement_with_teacher"],
        role=ref.role,
        runtime=ref.runtime,
        top5_accuracy=metrics["top5_accuracy"],
        kl_to_teacher=metrics["kl_to_teacher"],
        latency_samples_ms=list(samples.samples_ms),
        loops=samples.loops,
        threads=host_threads(threads),
        batch_size=batch_size,
        notes=notes,
    )
    return result, logits
